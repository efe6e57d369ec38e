"""Evaluation semantics beyond the worked examples: errors, holds, windows, fixed shares,
fees bounds, subsidies, counters, and the invariant check."""

from __future__ import annotations

import datetime as dt

import pytest

from clearing.errors import FailedPrecondition, InvalidArgument
from clearing.rules import evaluate as evaluation
from clearing.rules.evaluate import (Alert, CounterRequest, SplitInvariantError, evaluate,
                                     counter_requests)
from clearing.rules.model import Coupon, CouponFunding, HoldReason, LegKind

from tests.unit.rules.helpers import ACCOUNTS, b2b, by_ref, id_of, order, plan_of, split

TOP_SLICES = """
name: top-slices
currency_code: CNY
party_roles: [merchant]
rules:
  - rule_name: gov
    priority: 1
    top_slice: true
    condition: {tags_any: [gov]}
    shares:
      - {label: gov, type: SHARE_TYPE_RATIO, ratio_bps: 333, receiver: {account_ref: GOV_ACCOUNT}}
  - rule_name: fixed-then-pass
    priority: 2
    top_slice: true
    fees: [{label: svc, ratio_bps: 150, fixed_minor: 10, min_minor: 50, max_minor: 500,
            account_ref: PLAT_FEE}]
    shares:
      - {label: insurance, type: SHARE_TYPE_FIXED, fixed_minor: 300,
         receiver: {account_ref: ACC_1}}
  - rule_name: rest
    priority: 3
    condition: {max_amount_minor: 1000000}
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: PLAT_001}}
      - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {party_role: merchant}}
"""
MERCHANT = {"merchant": "M_10086"}


def test_top_slices_chain_with_floors_passed_on():
    ev = split(plan_of(TOP_SLICES), order(10_001, tags=("gov",), parties=MERCHANT))
    # gov: floor(10001 x 3.33%) = 333 (333.03), 9668 passed on
    # fee: 1.5% of 9668 = 145 + 10 = 155 (within 50..500); insurance 300; 9213 passed on
    # rest: platform 921 (921.3), merchant 8292
    assert [(leg.kind, leg.external_ref, leg.amount_minor, leg.rule_name) for leg in ev.legs] == [
        (LegKind.SHARE, "GOV_ACCOUNT", 333, "gov"),
        (LegKind.FEE, "PLAT_FEE", 155, "fixed-then-pass"),
        (LegKind.SHARE, "ACC_1", 300, "fixed-then-pass"),
        (LegKind.SHARE, "PLAT_001", 921, "rest"),
        (LegKind.SHARE, "M_10086", 8_292, "rest")]
    assert [(m.base_minor, m.fee_minor, m.passed_on_minor) for m in ev.matched_rules] == [
        (10_001, 0, 9_668), (9_668, 155, 9_213), (9_213, 0, 0)]
    assert ev.fee_minor == 155 and ev.distributed_minor == 10_001


def test_fee_bounds_min_and_max():
    plan = plan_of(TOP_SLICES)
    low = split(plan, order(1_000, parties=MERCHANT))  # 15 + 10 = 25 -> min 50
    assert low.legs[0].amount_minor == 50
    high = split(plan, order(999_999, parties=MERCHANT))  # 15000 + 10 -> max 500
    assert high.legs[0].amount_minor == 500


def test_no_matching_rule_fee_and_shares_exceeding_the_amount():
    plan = plan_of(TOP_SLICES)
    with pytest.raises(FailedPrecondition) as err:
        split(plan, order(1_000_000, parties=MERCHANT))  # `rest` stops below 10,000.00
    assert err.value.reason == "NO_MATCHING_RULE"
    with pytest.raises(FailedPrecondition) as err:
        split(plan, order(40, parties=MERCHANT))  # the minimum fee of 50 exceeds 40
    assert err.value.reason == "FEE_EXCEEDS_AMOUNT"
    with pytest.raises(FailedPrecondition) as err:
        split(plan, order(340, parties=MERCHANT))  # 340 - 50 fee < 300 insurance
    assert err.value.reason == "SHARES_EXCEED_AMOUNT"
    assert err.value.metadata == {"shares_minor": "300", "distributable_minor": "290"}


def test_bad_orders_are_invalid_arguments_with_field_paths():
    plan = plan_of(TOP_SLICES)
    cases = [
        (order(100, currency_code="USD"), "order.currency_code", "CURRENCY_MISMATCH"),
        (order(0), "order.amount_minor", "INVALID_ORDER"),
        (order(900_000_000_000_001), "order.amount_minor", "INVALID_ORDER"),
        (order(100, channel_fee_minor=101), "order.channel_fee_minor", "INVALID_ORDER"),
        (order(100, parties=MERCHANT, coupons=(Coupon("c", 0, CouponFunding.PLATFORM),)),
         "order.coupons[0].amount_minor", "INVALID_ORDER"),
        (order(100_000), "order.parties[merchant]", "INVALID_ORDER"),
        (order(100_000, parties={"merchant": "NOBODY"}), "order.parties[merchant]",
         "INVALID_ORDER"),
        (order(100_000, parties={"merchant": "USD_ACC"}), "order.parties[merchant]",
         "CURRENCY_MISMATCH"),
    ]
    for bad, path, reason in cases:
        with pytest.raises(InvalidArgument) as err:
            split(plan, bad)
        assert [v.field for v in err.value.violations] == [path]
        assert err.value.reason == reason


def test_channel_fee_equal_to_the_amount_splits_nothing_and_emits_no_zero_leg():
    ev = split(plan_of(b2b()), order(100, channel_fee_minor=100))
    assert ev.legs == () and ev.net_amount_minor == 0 and ev.distributed_minor == 0


def test_a_frozen_receiver_is_held_with_an_alert_a_closed_one_too():
    plan = plan_of(TOP_SLICES)
    ev = split(plan, order(100_000, parties={"merchant": "M_FROZEN"}))
    leg = ev.legs[-1]
    assert (leg.external_ref, leg.held_minor, leg.hold_reason) == (
        "M_FROZEN", leg.amount_minor, HoldReason.RECEIVER_UNAVAILABLE)
    assert ev.alerts == (Alert("RECEIVER_FROZEN", id_of("M_FROZEN"), leg.leg_index,
                               f"account 'M_FROZEN' is not active: its {leg.amount_minor} "
                               f"is held"),)
    assert ev.held_minor == leg.amount_minor
    closed = split(plan, order(100_000, parties={"merchant": "M_CLOSED"}))
    assert closed.alerts[0].reason == "RECEIVER_CLOSED"


def test_validity_windows_judge_the_paid_time():
    def ns(day: int) -> int:
        return int(dt.datetime(2026, 11, day, tzinfo=dt.timezone.utc).timestamp()) * 10**9

    text = """
    name: double-11
    currency_code: CNY
    rules:
      - rule_name: sale-day
        priority: 1
        start_time: "2026-11-11T00:00:00Z"
        end_time: "2026-11-12T00:00:00Z"
        shares:
          - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 500,
             receiver: {account_ref: PLAT_001}}
          - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: M_10086}}
      - rule_name: normal
        priority: 2
        shares:
          - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
             receiver: {account_ref: PLAT_001}}
          - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: M_10086}}
    """
    plan = plan_of(text)
    assert split(plan, order(10_000, paid_time_ns=ns(11))).legs[0].amount_minor == 500
    assert split(plan, order(10_000, paid_time_ns=ns(12))).legs[0].amount_minor == 1_000
    assert split(plan, order(10_000, paid_time_ns=ns(10))).legs[0].amount_minor == 1_000
    with pytest.raises(InvalidArgument) as err:
        split(plan, order(10_000))
    assert err.value.violations[0].field == "order.paid_time"


SUBSIDIES = """
name: subsidies
currency_code: CNY
rules:
  - rule_name: subsidised
    priority: 1
    shares:
      - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: M_10086}}
    subsidies:
      - {label: new-user, source_account_ref: MKT, basis: SUBSIDY_BASIS_FIXED,
         fixed_minor: 500, target: SUBSIDY_TARGET_RECEIVER,
         receiver: {account_ref: M_10086},
         release: {steps: [{event_name: RECEIVED, fraction_bps: 10000}]}}
      - {label: promo, source_account_ref: PLAT_FUNC, basis: SUBSIDY_BASIS_RATIO,
         ratio_bps: 333, cap_minor: 1000, target: SUBSIDY_TARGET_RECEIVER,
         receiver: {account_ref: M_10086}}
"""


def test_fixed_and_ratio_subsidies_with_cap_and_release():
    plan = plan_of(SUBSIDIES)
    ev = split(plan, order(10_001))
    assert [(leg.kind, leg.amount_minor, leg.debit_account_id, leg.held_minor)
            for leg in ev.legs] == [
        (LegKind.SHARE, 10_001, 0, 0),
        (LegKind.SUBSIDY, 500, id_of("MKT"), 500),
        (LegKind.SUBSIDY, 333, id_of("PLAT_FUNC"), 0)]  # 3.33% of 10001 = 333.03
    assert ev.subsidy_minor == 833 and ev.held_minor == 500
    capped = split(plan, order(1_000_000))
    assert capped.legs[-1].amount_minor == 1_000


def test_counters_an_order_raises():
    from tests.unit.rules.test_examples import HOSTS, SUPPLIER_TIERS
    hosts = plan_of(HOSTS)
    assert counter_requests(hosts, order(12_345, parties={"host": "HOST_01"})) == (
        CounterRequest("host_gmv_lifetime", "HOST_01", 2, 5, "", 12_345),)
    assert counter_requests(hosts, order(12_345)) == ()  # no host: not counted
    ev = split(hosts, order(10_000, parties={"host": "HOST_01"},
                            attributes={"host_level": "new"}))  # no value given: reads 0
    assert ev.counter_values[0].value == 0
    suppliers = plan_of(SUPPLIER_TIERS)
    assert counter_requests(suppliers, order(5)) == (
        CounterRequest("supplier_orders_month", "SUP_2025001", 1, 3, "", 1),)


def test_tier_replace_uses_the_last_tier_reached():
    text = """
    name: replace
    currency_code: CNY
    counters: [{name: gmv, metric: COUNTER_METRIC_AMOUNT_MINOR, period: COUNTER_PERIOD_YEAR,
                account_ref: HOST_01}]
    rules:
      - rule_name: r
        priority: 1
        shares:
          - label: host
            type: SHARE_TYPE_RATIO
            ratio_bps: 2000
            receiver: {account_ref: HOST_01}
            tiers:
              counter_name: gmv
              effect: TIER_EFFECT_REPLACE
              tiers: [{min_counter_value: 0, ratio_bps: 2500},
                      {min_counter_value: 1000, ratio_bps: 3000},
                      {min_counter_value: 5000, ratio_bps: 1000}]
          - {label: platform, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: PLAT_001}}
    """
    plan = plan_of(text)
    got = [split(plan, order(10_000), {"gmv": v}).legs[0].amount_minor
           for v in (0, 999, 1000, 4999, 5000, 10**9)]
    assert got == [2_500, 2_500, 3_000, 3_000, 1_000, 1_000]


def test_same_order_same_legs_and_inputs_untouched():
    plan = plan_of(TOP_SLICES)
    o = order(987_654, tags=("gov",), parties=MERCHANT)
    first = split(plan, o)
    assert all(split(plan, o) == first for _ in range(5))


def test_broken_sums_raise_split_invariant_error(monkeypatch):
    plan = plan_of(b2b())
    real = evaluation.allocate
    monkeypatch.setattr(evaluation, "allocate",
                        lambda amount, weights: [p + 1 for p in real(amount, weights)])
    with pytest.raises(SplitInvariantError) as err:
        split(plan, order(85_000_000))
    assert "do not sum" in str(err.value) or "sum to" in str(err.value)
    assert err.value.reason == "SPLIT_INVARIANT_BROKEN"


def test_a_negative_part_raises_split_invariant_error(monkeypatch):
    plan = plan_of(b2b())
    monkeypatch.setattr(evaluation, "allocate", lambda amount, weights: [
        amount + 5, -5] + [0] * (len(weights) - 2))
    with pytest.raises(SplitInvariantError):
        split(plan, order(85_000_000))


def test_accounts_are_optional_without_party_roles():
    ev = evaluate(plan_of(b2b()), order(1_000), {})
    assert by_ref(ev) == {"PLAT_001": 100, "SUP_2025001": 700, "LOGISTICS_B": 200}
    assert ACCOUNTS  # the helper's mapping is the one with states; here none is needed
