"""The ratio swing's arithmetic (clearing/risk/swing.py): exact integers, the threshold
itself accepted, new receivers and a candidate paying nobody."""

from __future__ import annotations

import pytest

from clearing.errors import InvariantViolation
from clearing.risk.swing import receiver_swings, share_bps, swing


def test_a_swing_of_exactly_the_threshold_does_not_exceed_it():
    # 1000 of 10000 -> 1300 of 10000: 30% exactly
    assert swing(1000, 10_000, 1300, 10_000, 3000) == (3000, False, False)
    # 1000 -> 1301: 30.1%
    assert swing(1000, 10_000, 1301, 10_000, 3000) == (3010, False, True)


def test_just_over_the_threshold_exceeds_though_it_rounds_down_to_it():
    # share 1/3 -> share 13/30 + a hair: swing 3000.x bps, floor 3000, exceeds
    assert swing(1, 3, 130_001, 300_000, 3000) == (3000, False, True)


def test_shares_are_relative_to_each_versions_total():
    # the worked example of tests/integration/test_backtest.py
    assert swing(2750, 17_500, 3000, 17_000, 3000) == (1229, False, False)
    assert swing(14_750, 17_500, 12_800, 17_000, 3000) == (1066, False, False)
    assert (share_bps(2750, 17_500), share_bps(0, 0)) == (1571, 0)


def test_new_receivers_and_a_candidate_paying_nobody():
    assert swing(0, 100, 5, 100, 3000) == (0, True, True)
    assert swing(0, 100, 0, 100, 3000) == (0, False, False)
    assert swing(10, 100, 0, 0, 3000) == (10_000, False, True)
    assert swing(10, 100, 0, 0, 10_000) == (10_000, False, False)


def test_receivers_come_largest_swing_first():
    out = receiver_swings([(1, "A", 10, 10), (2, "B", 0, 5), (3, "C", 10, 30)], 20, 45, 3000)
    # A: 1/2 -> 10/45, 55.5%; C: 1/2 -> 30/45, 33.3%
    assert [(r.external_ref, r.swing_bps) for r in out] == [("B", 0), ("A", 5555), ("C", 3333)]
    assert [r.exceeded for r in out] == [True, True, True]


def test_impossible_totals_are_a_bug():
    with pytest.raises(InvariantViolation):
        swing(11, 10, 1, 1, 3000)
