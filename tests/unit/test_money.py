"""Money: exact parsing and formatting, and the one rounding rule (allocate)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from clearing.errors import InvariantViolation
from clearing.money import allocate, bps_of, format_minor, is_currency, parse_major


@pytest.mark.parametrize("text,currency,minor", [
    ("14.70", "CNY", 1470), ("0.01", "CNY", 1), ("850000", "CNY", 85_000_000),
    ("100", "JPY", 100), ("1.234", "KWD", 1234), ("-3.5", "USD", -350)])
def test_parse_major_is_exact(text, currency, minor):
    assert parse_major(text, currency) == minor
    assert parse_major(format_minor(minor, currency), currency) == minor


@pytest.mark.parametrize("text,currency", [("0.001", "CNY"), ("1.5", "JPY"), ("abc", "CNY"),
                                           ("NaN", "CNY"), ("Infinity", "CNY")])
def test_parse_major_rejects(text, currency):
    with pytest.raises(ValueError):
        parse_major(text, currency)


def test_currencies():
    assert is_currency("CNY") and is_currency("JPY")
    assert not is_currency("cny") and not is_currency("XXX") and not is_currency("")


def test_format_minor():
    assert format_minor(1470, "CNY") == "14.70"
    assert format_minor(-5, "CNY") == "-0.05"
    assert format_minor(7, "JPY") == "7"


def test_allocate_worked_examples():
    # seed 002: 833,000.00 by 10/75/15
    assert allocate(83_300_000, [1000, 7500, 1500]) == [8_330_000, 62_475_000, 12_495_000]
    # seed 004: 98.00 by 15/85
    assert allocate(9800, [1500, 8500]) == [1470, 8330]
    # leftovers go to the largest remainders, ties to the earlier part
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate(2, [1, 1, 1]) == [1, 1, 0]
    assert allocate(10, [3333, 3333, 3334]) == [3, 3, 4]


def test_bps_of_floors():
    assert bps_of(9800, 1500) == 1470
    assert bps_of(1, 5000) == 0


def test_allocate_rejects_nonsense():
    with pytest.raises(InvariantViolation):
        allocate(10, [0, 0])
    with pytest.raises(InvariantViolation):
        allocate(-1, [1])


@given(st.integers(min_value=0, max_value=10**15),
       st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=30)
       .filter(lambda w: sum(w) > 0))
def test_allocate_properties(amount, weights):
    parts = allocate(amount, weights)
    assert sum(parts) == amount
    assert all(p >= 0 for p in parts)
    assert parts == allocate(amount, weights)  # deterministic
    total = sum(weights)
    for p, w in zip(parts, weights):  # each part within one unit of its exact share
        assert abs(p * total - amount * w) < total


def test_timestamp_conversion_is_exact():
    import datetime as dt
    from clearing.api.convert import timestamp
    for value in (dt.datetime(2026, 11, 11, 0, 0, 0, 1, tzinfo=dt.timezone.utc),
                  dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone.utc),
                  dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=dt.timezone.utc)):
        ts = timestamp(value)
        assert ts.ToDatetime(tzinfo=dt.timezone.utc) == value
