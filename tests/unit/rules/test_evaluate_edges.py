"""Evaluator edges named by its docstring: the order's bounds (both ends accepted) and the
descriptions a caller reads, windows open at one end, subsidy caps, counters whose subject
the order lacks, the most legs a split may hold, and the matched rules' records."""

from __future__ import annotations

import pytest

from clearing.errors import InvalidArgument
from clearing.rules import evaluate as evaluation
from clearing.rules.evaluate import SplitInvariantError, StepAmount
from clearing.rules.model import Coupon, CouponFunding, LegKind
from clearing.limits import LEGS_PER_SPLIT_MAX, ORDER_AMOUNT_MINOR_MAX

from tests.unit.rules.helpers import ACCOUNTS, order, plan_of, split

SIMPLE = """
name: simple
currency_code: CNY
party_roles: [merchant]
rules:
  - rule_name: only
    priority: 1
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: PLAT_001}}
      - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {party_role: merchant}}
"""
MERCHANT = {"merchant": "M_10086"}


def _violation(plan, o) -> tuple[str, str, str]:
    with pytest.raises(InvalidArgument) as err:
        split(plan, o)
    (v,) = err.value.violations
    return v.field, v.description, err.value.reason


def test_order_amount_bounds_are_accepted_at_both_ends():
    plan = plan_of(SIMPLE)
    assert ORDER_AMOUNT_MINOR_MAX == 900_000_000_000_000
    top = split(plan, order(ORDER_AMOUNT_MINOR_MAX, parties=MERCHANT))
    assert [leg.amount_minor for leg in top.legs] == [90_000_000_000_000, 810_000_000_000_000]
    assert [leg.amount_minor for leg in split(plan, order(1, parties=MERCHANT)).legs] == [1]
    assert _violation(plan, order(ORDER_AMOUNT_MINOR_MAX + 1, parties=MERCHANT)) == (
        "order.amount_minor", "must be 1 to 900000000000000 minor units", "INVALID_ORDER")
    # a channel fee of the whole amount is accepted (nothing to split), one more is not
    assert split(plan, order(100, channel_fee_minor=100, parties=MERCHANT)).legs == ()
    assert _violation(plan, order(100, channel_fee_minor=101, parties=MERCHANT)) == (
        "order.channel_fee_minor", "must be 0 to the order's amount_minor", "INVALID_ORDER")


def test_descriptions_of_bad_orders():
    plan = plan_of(SIMPLE)
    assert _violation(plan, order(100, currency_code="USD")) == (
        "order.currency_code", "the rule set splits CNY, not 'USD'", "CURRENCY_MISMATCH")
    assert _violation(plan, order(100, parties=MERCHANT, coupons=(
        Coupon("c", -1, CouponFunding.SELLER),))) == (
        "order.coupons[0].amount_minor", "must be a positive number of minor units",
        "INVALID_ORDER")
    assert _violation(plan, order(100)) == (
        "order.parties[merchant]", "required: the rule set pays party role 'merchant'",
        "INVALID_ORDER")
    assert _violation(plan, order(100, parties={"merchant": "NOBODY"})) == (
        "order.parties[merchant]", "unknown account 'NOBODY'", "INVALID_ORDER")
    assert _violation(plan, order(100, parties={"merchant": "USD_ACC"})) == (
        "order.parties[merchant]", "account 'USD_ACC' holds USD, the rule set splits CNY",
        "CURRENCY_MISMATCH")


def _ns(day: int) -> int:
    import datetime as dt
    return int(dt.datetime(2026, 11, day, tzinfo=dt.timezone.utc).timestamp()) * 10**9


@pytest.mark.parametrize("bound", ["start_time", "end_time"])
def test_a_window_open_at_one_end(bound):
    plan = plan_of(f"""
    name: open-window
    currency_code: CNY
    rules:
      - rule_name: windowed
        priority: 1
        {bound}: "2026-11-11T00:00:00Z"
        shares:
          - {{label: a, type: SHARE_TYPE_RATIO, ratio_bps: 10000, receiver: {{account_ref: ACC_1}}}}
      - rule_name: otherwise
        priority: 2
        shares:
          - {{label: b, type: SHARE_TYPE_RATIO, ratio_bps: 10000, receiver: {{account_ref: ACC_2}}}}
    """)
    # [start, forever) or [forever, end): the bound itself belongs to the start side
    got = {day: split(plan, order(100, paid_time_ns=_ns(day))).legs[0].external_ref
           for day in (10, 11, 12)}
    if bound == "start_time":
        assert got == {10: "ACC_2", 11: "ACC_1", 12: "ACC_1"}
    else:
        assert got == {10: "ACC_1", 11: "ACC_2", 12: "ACC_2"}


SUBSIDY = """
name: capped
currency_code: CNY
rules:
  - rule_name: only
    priority: 1
    shares:
      - {label: m, type: SHARE_TYPE_RATIO, ratio_bps: 10000, receiver: {account_ref: M_10086}}
    subsidies:
      - {label: promo, source_account_ref: MKT, basis: SUBSIDY_BASIS_RATIO, ratio_bps: 1000,
         cap_minor: 100, target: SUBSIDY_TARGET_RECEIVER, receiver: {account_ref: ACC_3},
         release: {steps: [{event_name: RECEIVED, fraction_bps: 10000}]}}
"""


@pytest.mark.parametrize("amount,subsidy", [(999, 99), (1_000, 100), (1_010, 100),
                                            (5_000, 100)])
def test_a_subsidy_is_capped(amount, subsidy):
    ev = split(plan_of(SUBSIDY), order(amount))
    leg = ev.legs[1]
    assert (leg.kind, leg.external_ref, leg.amount_minor) == (LegKind.SUBSIDY, "ACC_3", subsidy)
    assert (leg.label, leg.ratio_bps, leg.match_index, leg.rule_name) == ("promo", 0, 0, "only")
    assert leg.debit_account_id == ACCOUNTS["MKT"].account_id
    assert leg.release_steps == (StepAmount("RECEIVED", 10_000, subsidy),)
    assert (ev.subsidy_minor, ev.held_minor) == (subsidy, subsidy)


COUNTERS = """
name: counted
currency_code: CNY
party_roles: [host]
attributes: [{key: region}]
counters:
  - {name: by_host, metric: COUNTER_METRIC_ORDER_COUNT, period: COUNTER_PERIOD_MONTH,
     party_role: host}
  - {name: by_region, metric: COUNTER_METRIC_ORDER_COUNT, period: COUNTER_PERIOD_MONTH,
     attribute_key: region}
rules:
  - rule_name: only
    priority: 1
    shares:
      - label: a
        type: SHARE_TYPE_RATIO
        ratio_bps: 1000
        receiver: {account_ref: ACC_1}
        tiers: {counter_name: by_host, effect: TIER_EFFECT_ADD,
                tiers: [{min_counter_value: 1, ratio_bps: 1000}]}
      - label: b
        type: SHARE_TYPE_RATIO
        ratio_bps: 1000
        receiver: {account_ref: ACC_2}
        tiers: {counter_name: by_region, effect: TIER_EFFECT_ADD,
                tiers: [{min_counter_value: 1, ratio_bps: 2000}]}
      - {label: rest, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: PLAT_001}}
"""


def test_a_counter_whose_subject_the_order_lacks_reads_zero():
    plan = plan_of(COUNTERS)
    counts = {"by_host": 5, "by_region": 7}
    # no host party, no region attribute: both counters read 0 (not 5 / 7), subject ""
    ev = split(plan, order(10_000), counts)
    assert [(u.counter_name, u.subject, u.value) for u in ev.counter_values] == [
        ("by_host", "", 0), ("by_region", "", 0)]
    assert [leg.amount_minor for leg in ev.legs] == [1_000, 1_000, 8_000]
    # with both subjects: the values are read and the tiers apply (10% + 10%, 10% + 20%)
    ev = split(plan, order(10_000, parties={"host": "HOST_01"},
                           attributes={"region": "north"}), counts)
    assert [(u.counter_name, u.subject, u.value) for u in ev.counter_values] == [
        ("by_host", "HOST_01", 5), ("by_region", "north", 7)]
    assert [(leg.amount_minor, leg.ratio_bps) for leg in ev.legs] == [
        (2_000, 2_000), (3_000, 3_000), (5_000, 0)]


def _many_legs(count: int) -> str:
    """Top-slice rules of 32 fixed shares of 1 unit each, then a last rule: `count` legs."""
    rules, left, priority = [], count, 1
    while left > 32:
        shares = "\n".join(
            f"      - {{label: s{i}, type: SHARE_TYPE_FIXED, fixed_minor: 1,"
            f" receiver: {{account_ref: ACC_{i}}}}}" for i in range(32))
        rules.append(f"  - rule_name: top{priority}\n    priority: {priority}\n"
                     f"    top_slice: true\n    shares:\n{shares}")
        left -= 32
        priority += 1
    shares = "\n".join(
        f"      - {{label: s{i}, type: SHARE_TYPE_FIXED, fixed_minor: 1,"
        f" receiver: {{account_ref: ACC_{i}}}}}" for i in range(left - 1))
    rules.append(f"  - rule_name: last\n    priority: {priority}\n    shares:\n{shares}\n"
                 f"      - {{label: rest, type: SHARE_TYPE_REMAINDER,"
                 f" receiver: {{account_ref: PLAT_001}}}}")
    return "name: many\ncurrency_code: CNY\nrules:\n" + "\n".join(rules) + "\n"


def test_a_split_of_exactly_the_most_legs_allowed():
    assert LEGS_PER_SPLIT_MAX == 256
    plan = plan_of(_many_legs(LEGS_PER_SPLIT_MAX))
    ev = split(plan, order(10_000))
    assert len(ev.legs) == 256
    assert ev.legs[-1].amount_minor == 10_000 - 255
    assert [m.passed_on_minor for m in ev.matched_rules] == [
        10_000 - 32 * k for k in range(1, 8)] + [0]


def test_matched_rules_record_what_each_rule_received():
    plan = plan_of("""
    name: records
    currency_code: CNY
    rules:
      - rule_name: top
        priority: 1
        top_slice: true
        fees: [{label: f1, fixed_minor: 10, account_ref: PLAT_FEE},
               {label: f2, ratio_bps: 100, account_ref: PLAT_FEE}]
        shares:
          - {label: gov, type: SHARE_TYPE_RATIO, ratio_bps: 333, receiver: {account_ref: ACC_1}}
      - rule_name: last
        priority: 2
        shares:
          - {label: rest, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: ACC_2}}
    """)
    ev = split(plan, order(10_000))
    # top: fees 10 + 100 = 110; 9890 left; gov floor(329.33) = 329; 9561 passed on
    assert [(m.rule_name, m.priority, m.level, m.parent_match_index, m.top_slice,
             m.base_minor, m.fee_minor, m.passed_on_minor) for m in ev.matched_rules] == [
        ("top", 1, 1, -1, True, 10_000, 110, 9_561),
        ("last", 2, 1, -1, False, 9_561, 0, 0)]
    assert ev.fee_minor == 110
    assert [(leg.label, leg.amount_minor) for leg in ev.legs] == [
        ("f1", 10), ("f2", 100), ("gov", 329), ("rest", 9_561)]


def test_release_steps_not_summing_to_their_leg_are_a_bug(monkeypatch):
    plan = plan_of(SUBSIDY)
    monkeypatch.setattr(evaluation, "_steps", lambda amount, steps: tuple(
        StepAmount(s.event_name, s.fraction_bps, amount - 1) for s in steps))
    with pytest.raises(SplitInvariantError) as err:
        split(plan, order(1_000))
    assert "release" in str(err.value)


def test_refusals_say_which_rule_set_and_amounts():
    from clearing.errors import FailedPrecondition
    plan = plan_of("""
    name: narrow
    currency_code: CNY
    rules:
      - rule_name: small
        priority: 1
        condition: {max_amount_minor: 1000}
        fees: [{label: f, fixed_minor: 300, account_ref: PLAT_FEE}]
        shares:
          - {label: fixed, type: SHARE_TYPE_FIXED, fixed_minor: 500, receiver: {account_ref: ACC_1}}
          - {label: rest, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: ACC_2}}
    """)
    with pytest.raises(FailedPrecondition) as err:
        split(plan, order(5_000))
    assert err.value.reason == "NO_MATCHING_RULE"
    assert err.value.metadata == {"rule_set_name": "narrow"}
    assert err.value.message == ("no rule of rule set 'narrow' (level 1) that ends evaluation "
                                 "applies to the order")
    with pytest.raises(FailedPrecondition) as err:
        split(plan, order(299))
    assert err.value.message == "rule 'small': fees of 300 exceed the 299 it receives"
    with pytest.raises(FailedPrecondition) as err:
        split(plan, order(799))  # 499 left after the fee, 500 fixed
    assert err.value.message == ("rule 'small' of rule set 'narrow': its shares take 500 of "
                                 "the 499 it distributes")
    assert err.value.metadata == {"shares_minor": "500", "distributable_minor": "499"}


def test_a_window_needs_the_paid_time():
    plan = plan_of("""
    name: windowed
    currency_code: CNY
    rules:
      - rule_name: w
        priority: 1
        end_time: "2026-11-11T00:00:00Z"
        shares:
          - {label: a, type: SHARE_TYPE_RATIO, ratio_bps: 10000, receiver: {account_ref: ACC_1}}
    """)
    assert _violation(plan, order(100)) == (
        "order.paid_time", "required: rules of this rule set have validity windows",
        "INVALID_ORDER")


def test_a_condition_sees_the_orders_currency():
    plan = plan_of("""
    name: by-currency
    currency_code: CNY
    rules:
      - rule_name: cny
        priority: 1
        condition: {currency_codes: [CNY]}
        shares:
          - {label: a, type: SHARE_TYPE_RATIO, ratio_bps: 10000, receiver: {account_ref: ACC_1}}
    """)
    assert split(plan, order(100)).legs[0].external_ref == "ACC_1"
    m = split(plan, order(100)).matched_rules[0]
    assert (m.match_index, m.rule_set_name, m.rule_set_version) == (0, "by-currency", 0)


def _inject(monkeypatch, change):
    """Make every leg the evaluator emits pass through `change(run, leg)` (a bug)."""
    real = evaluation._leg

    def leg(run, *args):
        real(run, *args)
        change(run, run.legs[-1])

    monkeypatch.setattr(evaluation, "_leg", leg)


def test_a_partly_held_leg_is_a_bug(monkeypatch):
    _inject(monkeypatch, lambda run, leg: run.legs.__setitem__(
        -1, leg._replace(held_minor=leg.amount_minor - 1)) if leg.held_minor else None)
    with pytest.raises(SplitInvariantError) as err:
        split(plan_of(SUBSIDY), order(1_000))  # the subsidy leg is held by its release
    assert "partly held" in str(err.value)


def test_a_zero_leg_is_a_bug(monkeypatch):
    _inject(monkeypatch, lambda run, leg: run.legs.append(leg._replace(amount_minor=0)))
    with pytest.raises(SplitInvariantError) as err:
        split(plan_of(SIMPLE), order(1_000, parties=MERCHANT))
    assert "not positive" in str(err.value)


def test_subsidy_legs_not_summing_to_the_subsidies_are_a_bug(monkeypatch):
    _inject(monkeypatch, lambda run, leg: run.legs.append(leg)
            if leg.kind == LegKind.SUBSIDY else None)
    with pytest.raises(SplitInvariantError) as err:
        split(plan_of(SUBSIDY), order(1_000))
    assert "subsidy legs sum to 200, not 100" in str(err.value)


def test_more_legs_than_a_split_may_hold_is_a_bug(monkeypatch):
    _inject(monkeypatch, lambda run, leg: run.legs.extend(
        [leg._replace(amount_minor=0)] * LEGS_PER_SPLIT_MAX))
    with pytest.raises(SplitInvariantError) as err:
        split(plan_of(SIMPLE), order(1_000, parties=MERCHANT))
    assert "legs, more than 256" in str(err.value)
