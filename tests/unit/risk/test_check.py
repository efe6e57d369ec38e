"""The risk check of one split (pure): which receivers a policy flags, at and one minor unit
above each threshold, and the evaluation with their shares held."""

from __future__ import annotations

from clearing.errors import Violations
from clearing.reasons import Reason
from clearing.risk.check import Counts, check, shares
from clearing.risk.model import (CurrencyLimits, Policy, RiskAction, RiskRule,
                                 policy_violations)
from clearing.rules.evaluate import Evaluation, Leg
from clearing.rules.model import HoldReason, LegKind

MERCHANT, PLATFORM, FROZEN = 11, 12, 13


def _leg(i: int, account_id: int, amount: int, kind=LegKind.SHARE, held: int = 0,
         reason=HoldReason.UNSPECIFIED) -> Leg:
    return Leg(i, kind, account_id, f"A{account_id}", 0, amount, held, reason, (), "r", 1,
               "base", "l", 1, 0, 0)


def _ev(*legs: Leg) -> Evaluation:
    total = sum(leg.amount_minor for leg in legs)
    return Evaluation("r", 1, "CNY", total, 0, total, 0, total, 0,
                      sum(leg.held_minor for leg in legs), tuple(legs), (), (), ())


POLICY = Policy((CurrencyLimits("CNY", large_split_minor=50_000, frequency_amount_minor=10_000,
                                daily_inflow_cap_minor=100_000),), 2, 3600)


def test_shares_sum_a_receivers_share_legs_only():
    ev = _ev(_leg(0, MERCHANT, 30_000), _leg(1, MERCHANT, 20_000), _leg(2, PLATFORM, 5, LegKind.FEE),
             _leg(3, FROZEN, 7, held=7, reason=HoldReason.RECEIVER_UNAVAILABLE))
    assert shares(ev) == {MERCHANT: 50_000}


def test_at_each_threshold_nothing_one_unit_above_a_hit():
    at = Counts(frequency_count=2, day_inflow_minor=100_000)
    held, note = check(POLICY, _ev(_leg(0, MERCHANT, 50_000)), {MERCHANT: at})
    assert note.flags == () and held.held_minor == 0
    above = Counts(frequency_count=3, day_inflow_minor=100_001)
    held, note = check(POLICY, _ev(_leg(0, MERCHANT, 50_001), _leg(1, PLATFORM, 1_000)),
                       {MERCHANT: above})
    [flag] = note.flags
    assert [h.rule for h in flag.hits] == [RiskRule.LARGE_SPLIT, RiskRule.FREQUENCY,
                                           RiskRule.DAILY_INFLOW]
    assert [(h.observed, h.limit) for h in flag.hits] == [(50_001, 50_000), (3, 2),
                                                          (100_001, 100_000)]
    assert (flag.amount_minor, flag.held_minor) == (50_001, 50_001)
    assert [(leg.held_minor, leg.hold_reason) for leg in held.legs] == [
        (50_001, HoldReason.RISK_REVIEW), (0, HoldReason.UNSPECIFIED)]
    assert held.held_minor == 50_001
    assert [a.reason for a in held.alerts] == [Reason.RISK_HOLD]
    assert note.shares == {MERCHANT: 50_001, PLATFORM: 1_000}


def test_a_share_at_the_frequency_amount_does_not_hit_frequency():
    counts = Counts(frequency_count=9, day_inflow_minor=0)
    _, note = check(POLICY, _ev(_leg(0, MERCHANT, 10_000)), {MERCHANT: counts})
    assert note.flags == ()


def test_review_only_holds_nothing():
    policy = Policy(POLICY.limits, 2, 3600, action=RiskAction.REVIEW_ONLY)
    held, note = check(policy, _ev(_leg(0, MERCHANT, 60_000)), {})
    assert held.held_minor == 0 and note.flags[0].held_minor == 0


def test_a_held_release_policy_leg_is_held_whole_for_review():
    leg = _leg(0, MERCHANT, 60_000, held=30_000, reason=HoldReason.RELEASE_POLICY)
    held, _ = check(POLICY, _ev(leg), {})
    assert (held.legs[0].held_minor, held.legs[0].hold_reason) == (60_000,
                                                                  HoldReason.RISK_REVIEW)


def test_another_currency_is_not_checked():
    ev = _ev(_leg(0, MERCHANT, 10**9))._replace(currency_code="USD")
    held, note = check(POLICY, ev, {})
    assert note.flags == () and held == ev


def test_policy_round_trips_and_validates():
    assert Policy.from_json(POLICY.to_json(), 3) == Policy(POLICY.limits, 2, 3600, version=3)
    v = Violations()
    policy_violations(v, Policy((CurrencyLimits("CNY", 1), CurrencyLimits("CNY", 1)), 0, 0))
    assert [i.field for i in v.items] == ["policy.limits[1].currency_code"]
