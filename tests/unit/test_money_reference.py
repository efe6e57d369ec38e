"""money.allocate pinned against an independent reference of the rounding rule, written
here with exact fractions: each part is the floor of its exact share amount x w / total;
the units left over go one each to the parts with the largest discarded fractions, ties to
the earlier part. And bps_of / parse_major / format_minor at their edges."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import example, given, settings, strategies as st

from clearing.errors import InvariantViolation
from clearing.money import (
    BPS_ONE, allocate, bps_of, exponent, format_minor, is_currency, parse_major)
from clearing.limits import AMOUNT_MINOR_MAX


def reference(amount: int, weights: list[int]) -> list[int]:
    """The rule, from its statement, with Fractions (no shared code with money.py)."""
    total = sum(weights)
    exact = [Fraction(amount * w, total) for w in weights]
    parts = [int(x.numerator // x.denominator) for x in exact]
    fractions = [x - p for x, p in zip(exact, parts)]
    left = amount - sum(parts)
    assert 0 <= left < len(weights) or left == 0
    # largest discarded fraction first; on equal fractions the earlier part first
    ranked = sorted(range(len(weights)), key=lambda i: (-fractions[i], i))
    for i in ranked[:left]:
        parts[i] += 1
    return parts


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.integers(min_value=0, max_value=AMOUNT_MINOR_MAX),
       st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=12)
       .filter(lambda w: sum(w) > 0))
@example(2, [1, 1, 1])
@example(5, [1, 1, 1, 1, 1, 1, 1])
@example(1, [0, 3, 3])
@example(10**15, [1, 2, 3, 4, 5, 6, 7])
def test_allocate_equals_the_reference(amount, weights):
    assert allocate(amount, weights) == reference(amount, weights)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(min_value=0, max_value=1_000),
       st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=8)
       .filter(lambda w: sum(w) > 0))
def test_allocate_equals_the_reference_small_ties(amount, weights):
    # small weights make equal remainders (ties) frequent
    assert allocate(amount, weights) == reference(amount, weights)


@pytest.mark.parametrize("amount,weights,parts", [
    # exact shares 3.333.., 3.333.., 3.333..: one unit left, to the first (tie)
    (10, [1, 1, 1], [4, 3, 3]),
    # 11 by 1/1/1: 3.67 x3, two units left, to the first two
    (11, [1, 1, 1], [4, 4, 3]),
    # 7 by 1/2/4 (of 7): exact 1, 2, 4: nothing left over
    (7, [1, 2, 4], [1, 2, 4]),
    # 10 by 1/2 (of 3): 3.33 and 6.67: the larger fraction (second) takes the unit
    (10, [1, 2], [3, 7]),
    # 10 by 2/1: 6.67 and 3.33: the first takes it
    (10, [2, 1], [7, 3]),
    # 1 by 1/1/2: 0.25, 0.25, 0.5: the 0.5 takes the unit
    (1, [1, 1, 2], [0, 0, 1]),
    # 3 by 1/1/1/1: 0.75 x4: three units, to the first three
    (3, [1, 1, 1, 1], [1, 1, 1, 0]),
    # a zero weight never gets a leftover unit, even listed first
    (1, [0, 1, 1], [0, 1, 0]),
    # one weight takes everything
    (12_345, [7], [12_345]),
    (0, [1, 2], [0, 0]),
    # 100 by 33.33/33.33/33.34 %: 33.33, 33.33, 33.34 -> 33, 33, 33 + one unit to the .34
    (100, [3333, 3333, 3334], [33, 33, 34]),
    # 101 by 5000/5000 bps: 50.5 each: the unit to the first
    (101, [5000, 5000], [51, 50]),
])
def test_allocate_hand_examples(amount, weights, parts):
    assert allocate(amount, weights) == parts
    assert reference(amount, weights) == parts


def test_allocate_refuses_what_the_rule_does_not_define():
    for amount, weights, message in ((10, [0, 0], "allocate: weights sum to zero"),
                                     (10, [], "allocate: weights sum to zero"),
                                     (-1, [1], "allocate: negative amount"),
                                     (10, [1, -1, 1], "allocate: negative weight")):
        with pytest.raises(InvariantViolation) as err:
            allocate(amount, weights)
        assert str(err.value) == message
    assert allocate(0, [0, 1]) == [0, 0]  # zero is an amount


@pytest.mark.parametrize("amount,bps,want", [
    (9_800, 1_500, 1_470), (1, 5_000, 0), (1, BPS_ONE, 1), (9_999, 1, 0), (10_000, 1, 1),
    (19_999, 1, 1), (0, 10_000, 0), (10**15, 10_000, 10**15), (12_345, 60, 74)])
def test_bps_of_floors(amount, bps, want):
    assert BPS_ONE == 10_000
    assert bps_of(amount, bps) == want


@pytest.mark.parametrize("text,currency,minor", [
    (" 14.70 ", "CNY", 1470), ("0", "CNY", 0), ("1", "JPY", 1), ("0.001", "KWD", 1),
    ("1e2", "CNY", 10_000), ("-0.01", "CNY", -1)])
def test_parse_major_edges(text, currency, minor):
    assert parse_major(text, currency) == minor


@pytest.mark.parametrize("text,currency", [("1.001", "CNY"), ("0.0001", "KWD"), ("1.1", "JPY"),
                                           ("", "CNY"), ("-inf", "CNY"), ("sNaN", "CNY")])
def test_parse_major_refusals(text, currency):
    with pytest.raises(ValueError) as err:
        parse_major(text, currency)
    # the message names the text (the CLI shows it)
    assert repr(text) in str(err.value)
    if text and text not in ("-inf", "sNaN"):
        assert f"more decimals than {currency} allows" in str(err.value)
    elif text:
        assert "not a finite number" in str(err.value)
    else:
        assert "not a number" in str(err.value)


@pytest.mark.parametrize("minor,currency,text", [
    (0, "CNY", "0.00"), (5, "CNY", "0.05"), (100, "CNY", "1.00"), (-1470, "CNY", "-14.70"),
    (1234, "KWD", "1.234"), (-7, "JPY", "-7"), (0, "JPY", "0"), (10, "KWD", "0.010")])
def test_format_minor_edges(minor, currency, text):
    assert format_minor(minor, currency) == text


def test_exponents_and_codes():
    assert (exponent("CNY"), exponent("JPY"), exponent("KWD"), exponent("USD")) == (2, 0, 3, 2)
    assert is_currency("ZWL") and is_currency("AED") and is_currency("XPF") and is_currency("TND")
    assert not is_currency("ABC")
