"""The evaluator against an independent reference, leg for leg.

`reference()` below re-states the split semantics of the README / REQUIREMENTS (what is
split is the order minus its channel fee; per applying rule: subsidies into the split
base, then fees on that base, then shares of what is left, then subsidies to receivers;
a top-slice rule passes on what its shares leave; release steps floor their fraction of
the leg and the last step takes what is left) for a class of rule sets: one level, top-slice
rules then one final rule, ratio / fixed / remainder shares, fees with min and max,
subsidies of every basis with caps, release policies of 1 to 8 steps, frozen receivers.
It shares no code with the evaluator (its rounding is fractions.Fraction arithmetic).
The hand-worked examples pin the cases named in issue 9 with integers worked out here."""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, note, settings, strategies as st

from clearing.errors import FailedPrecondition
from clearing.rules import compile as plans
from clearing.rules.evaluate import evaluate
from clearing.rules.model import (
    Coupon, CouponFunding, Fee, HoldReason, LegKind, Order, Receiver, ReleasePolicy,
    ReleaseStep, Rule, RuleSet, Share, ShareType, Subsidy, SubsidyBasis, SubsidyTarget)
from clearing.rules.validate import validate

from tests.unit.rules.helpers import ACCOUNTS, order, plan_of, split
from tests.unit.test_money_reference import reference as reference_allocate

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
REFS = ["ACC_1", "ACC_2", "ACC_3", "PLAT_001", "M_FROZEN"]


class RefLeg(NamedTuple):
    kind: LegKind
    account_id: int
    debit_account_id: int
    amount_minor: int
    held_minor: int
    steps: tuple[tuple[str, int, int], ...]  # (event, fraction, amount)
    label: str
    rule_name: str
    ratio_bps: int  # a RATIO share's ratio, else 0
    match_index: int  # the applying rule's place in evaluation order


def _floor_bps(amount: int, bps: int) -> int:
    x = Fraction(amount) * Fraction(bps, 10_000)
    return x.numerator // x.denominator


def _steps(amount: int, release: ReleasePolicy | None) -> tuple[int, ...]:
    if release is None or not release.steps:
        return ()
    parts = [_floor_bps(amount, s.fraction_bps) for s in release.steps[:-1]]
    parts.append(amount - sum(parts))
    return tuple((s.event_name, s.fraction_bps, part) for s, part in zip(release.steps, parts))


def _leg(kind, ref: str, debit: int, amount: int, release, label: str, rule: Rule,
         ratio: int, match: int) -> RefLeg:
    account = ACCOUNTS[ref]
    steps = _steps(amount, release)
    held = amount if steps or account.status != 1 else 0
    return RefLeg(kind, account.account_id, debit, amount, held, steps, label, rule.rule_name,
                  ratio, match)


def _subsidy_amount(s: Subsidy, o: Order) -> int:
    if s.basis == SubsidyBasis.PLATFORM_COUPONS:
        amount = sum(c.amount_minor for c in o.coupons if c.funding == CouponFunding.PLATFORM)
    elif s.basis == SubsidyBasis.FIXED:
        amount = s.fixed_minor
    else:
        amount = _floor_bps(o.amount_minor, s.ratio_bps)  # of the order's amount
    return min(amount, s.cap_minor) if s.cap_minor else amount


def reference(rules: tuple[Rule, ...], o: Order) -> list[RefLeg] | str:
    legs: list[RefLeg] = []
    mkt = ACCOUNTS["MKT"].account_id
    received = o.amount_minor - o.channel_fee_minor
    for match, rule in enumerate(rules):
        base = received
        for s in rule.subsidies:
            if s.target == SubsidyTarget.SPLIT_BASE:
                amount = _subsidy_amount(s, o)
                base += amount
                if amount:
                    legs.append(RefLeg(LegKind.SUBSIDY, 0, mkt, amount, 0, (), s.label,
                                       rule.rule_name, 0, match))
        fees = []
        for f in rule.fees:
            fee = _floor_bps(base, f.ratio_bps) + f.fixed_minor
            fee = max(fee, f.min_minor)
            if f.max_minor:
                fee = min(fee, f.max_minor)
            fees.append(fee)
            if fee:
                legs.append(_leg(LegKind.FEE, f.account_ref, 0, fee, f.release, f.label, rule,
                                 0, match))
        if sum(fees) > base:
            return "FEE_EXCEEDS_AMOUNT"
        left = base - sum(fees)
        types = [s.type for s in rule.shares]
        if not rule.top_slice and ShareType.REMAINDER not in types:
            amounts = reference_allocate(left, [s.ratio_bps for s in rule.shares])
        else:
            amounts = [_floor_bps(left, s.ratio_bps) if s.type == ShareType.RATIO
                       else s.fixed_minor for s in rule.shares]
            if sum(amounts) > left:
                return "SHARES_EXCEED_AMOUNT"
            if ShareType.REMAINDER in types:
                amounts[types.index(ShareType.REMAINDER)] = left - sum(amounts)
        for s, amount in zip(rule.shares, amounts):
            if amount:
                ratio = s.ratio_bps if s.type == ShareType.RATIO else 0
                legs.append(_leg(LegKind.SHARE, s.receiver.account_ref, 0, amount, s.release,
                                 s.label, rule, ratio, match))
        for s in rule.subsidies:
            if s.target == SubsidyTarget.RECEIVER:
                amount = _subsidy_amount(s, o)
                if amount:
                    legs.append(_leg(LegKind.SUBSIDY, s.receiver.account_ref, mkt, amount,
                                     s.release, s.label, rule, 0, match))
        if not rule.top_slice:
            return legs
        received = left - sum(amounts)
    raise AssertionError("the rule sets drawn end with a rule that is not top-slice")


# ---- drawing rule sets of the class ---------------------------------------------------------

@st.composite
def releases(draw) -> ReleasePolicy | None:
    count = draw(st.sampled_from([0, 0, 1, 2, 3, 4, 8]))
    if count == 0:
        return None
    cuts = sorted(draw(st.lists(st.integers(1, 9_999), min_size=count - 1,
                                max_size=count - 1, unique=True)))
    edges = [0, *cuts, 10_000]
    return ReleasePolicy(tuple(ReleaseStep(f"E{k}", b - a)
                               for k, (a, b) in enumerate(zip(edges, edges[1:]))))


@st.composite
def fees(draw) -> tuple[Fee, ...]:
    out = []
    for i in range(draw(st.integers(0, 2))):
        ratio = draw(st.integers(0, 3_000))
        fixed = draw(st.sampled_from([0, 1, 99]))
        if not ratio and not fixed:
            fixed = 1
        low = draw(st.sampled_from([0, 0, 50]))
        high = draw(st.sampled_from([0, 0, low + 1, low + 5_000]))
        out.append(Fee(f"fee{i}", ratio, fixed, "PLAT_FEE", low, high, draw(releases())))
    return tuple(out)


@st.composite
def subsidies(draw) -> tuple[Subsidy, ...]:
    out = []
    for i in range(draw(st.integers(0, 2))):
        basis = draw(st.sampled_from([SubsidyBasis.PLATFORM_COUPONS, SubsidyBasis.FIXED,
                                      SubsidyBasis.RATIO]))
        target = draw(st.sampled_from([SubsidyTarget.SPLIT_BASE, SubsidyTarget.RECEIVER]))
        receiver = release = None
        if target == SubsidyTarget.RECEIVER:
            receiver, release = Receiver(account_ref=draw(st.sampled_from(REFS))), draw(releases())
        out.append(Subsidy(
            f"sub{i}", "MKT", basis, target,
            fixed_minor=draw(st.integers(1, 10_000)) if basis == SubsidyBasis.FIXED else 0,
            ratio_bps=draw(st.integers(1, 2_000)) if basis == SubsidyBasis.RATIO else 0,
            cap_minor=draw(st.sampled_from([0, 0, 1, 300])), receiver=receiver,
            release=release))
    return tuple(out)


def _ratios(draw, total: int, count: int) -> list[int]:
    if count == 1:
        return [total]
    cuts = sorted(draw(st.lists(st.integers(1, total - 1), min_size=count - 1,
                                max_size=count - 1, unique=True)))
    edges = [0, *cuts, total]
    return [b - a for a, b in zip(edges, edges[1:])]


def _receiver(draw) -> Receiver:
    return Receiver(account_ref=draw(st.sampled_from(REFS)))


@st.composite
def rules(draw) -> tuple[Rule, ...]:
    out = []
    for i in range(draw(st.integers(0, 2))):  # top-slice rules: floors, fixed, passed on
        count = draw(st.integers(1, 3))
        shares = [Share(f"t{i}r{k}", ShareType.RATIO, _receiver(draw), ratio_bps=r,
                        release=draw(releases()))
                  for k, r in enumerate(_ratios(draw, draw(st.integers(count, 6_000)), count))]
        if draw(st.booleans()):
            shares.append(Share(f"t{i}f", ShareType.FIXED, _receiver(draw),
                                fixed_minor=draw(st.integers(1, 2_000))))
        out.append(Rule(f"top{i}", i + 1, tuple(shares), draw(fees()), draw(subsidies()),
                        top_slice=True))
    if draw(st.booleans()):  # allocate: ratios of exactly 100%
        count = draw(st.integers(1, 6))
        shares = [Share(f"r{k}", ShareType.RATIO, _receiver(draw), ratio_bps=r,
                        release=draw(releases()))
                  for k, r in enumerate(_ratios(draw, 10_000, count))]
    else:  # floors, fixed amounts and a remainder
        count = draw(st.integers(0, 4))
        shares = ([Share(f"r{k}", ShareType.RATIO, _receiver(draw), ratio_bps=r,
                         release=draw(releases()))
                   for k, r in enumerate(_ratios(draw, draw(st.integers(count, 9_999)), count))]
                  if count else [])
        for k in range(draw(st.integers(0, 2))):
            shares.append(Share(f"f{k}", ShareType.FIXED, _receiver(draw),
                                fixed_minor=draw(st.integers(1, 3_000)), release=draw(releases())))
        shares.insert(draw(st.integers(0, len(shares))),
                      Share("rest", ShareType.REMAINDER, _receiver(draw), release=draw(releases())))
    out.append(Rule("last", len(out) + 1, tuple(shares), draw(fees()), draw(subsidies())))
    return tuple(out)


@st.composite
def orders(draw) -> Order:
    amount = draw(st.one_of(st.integers(1, 2_000), st.integers(1, 10**12)))
    channel_fee = draw(st.sampled_from([0, 0, 1, amount // 100, amount]))
    coupons = tuple(Coupon(f"c{i}", draw(st.integers(1, 5_000)),
                           draw(st.sampled_from([CouponFunding.PLATFORM, CouponFunding.SELLER])))
                    for i in range(draw(st.integers(0, 2))))
    return Order("ORD", amount, "CNY", channel="ALIPAY", channel_fee_minor=channel_fee,
                 coupons=coupons)


def _actual(rs: tuple[Rule, ...], o: Order) -> list[RefLeg] | str:
    rule_set = RuleSet("ref", "CNY", rs, version=1)
    assert validate(rule_set, ACCOUNTS, None) == []
    plan = plans.compile_plan(rule_set, ACCOUNTS, None)
    try:
        ev = evaluate(plan, o, {}, accounts=ACCOUNTS)
    except FailedPrecondition as exc:
        return exc.reason
    for leg in ev.legs:
        if leg.held_minor and not leg.release_steps:
            assert leg.hold_reason == HoldReason.RECEIVER_UNAVAILABLE
    # the totals, from the rule's definitions
    legs = ev.legs
    assert (ev.rule_set_name, ev.rule_set_version, ev.currency_code) == ("ref", 1, "CNY")
    assert (ev.amount_minor, ev.channel_fee_minor) == (o.amount_minor, o.channel_fee_minor)
    assert ev.net_amount_minor == o.amount_minor - o.channel_fee_minor
    assert ev.fee_minor == sum(leg.amount_minor for leg in legs if leg.kind == LegKind.FEE)
    assert ev.subsidy_minor == sum(leg.amount_minor for leg in legs
                                   if leg.kind == LegKind.SUBSIDY)
    assert ev.distributed_minor == ev.net_amount_minor + sum(
        leg.amount_minor for leg in legs if leg.kind == LegKind.SUBSIDY and not leg.account_id)
    assert ev.held_minor == sum(leg.held_minor for leg in legs)
    assert all(leg.level == 1 and (leg.rule_set_name, leg.rule_set_version) == ("ref", 1)
               for leg in legs)
    assert [leg.leg_index for leg in legs] == list(range(len(legs)))
    return [RefLeg(leg.kind, leg.account_id, leg.debit_account_id, leg.amount_minor,
                   leg.held_minor, tuple(tuple(s) for s in leg.release_steps),
                   leg.label, leg.rule_name, leg.ratio_bps, leg.match_index)
            for leg in ev.legs]


@SETTINGS
@given(rs=rules(), o=orders())
def test_legs_equal_the_reference(rs, o):
    want = reference(rs, o)
    note(f"reference: {want}")
    assert _actual(rs, o) == want


# ---- hand-worked examples -------------------------------------------------------------------

def _legs(ev):
    return [(leg.kind, leg.external_ref, leg.amount_minor, leg.held_minor,
             [s.amount_minor for s in leg.release_steps]) for leg in ev.legs]


THREE_STEPS = """
name: three-steps
currency_code: CNY
rules:
  - rule_name: only
    priority: 1
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: PLAT_001}}
      - {label: supplier, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: SUP_2025001},
         release: {steps: [{event_name: SHIPPED, fraction_bps: 3333},
                           {event_name: RECEIVED, fraction_bps: 3333},
                           {event_name: CONFIRMED, fraction_bps: 3334}]}}
"""


def test_three_step_release_each_step_its_fraction_the_last_what_is_left():
    ev = split(plan_of(THREE_STEPS), order(10_001))
    # platform: floor(10001 x 10%) = 1000; supplier: 9001, held whole
    # steps: floor(9001 x 33.33%) = 3000 (3000.03), again 3000, the last 9001 - 6000 = 3001
    # (3334 bps of 9001 would be 3000.93 -> 3000: the last step is not its own fraction)
    assert _legs(ev) == [(LegKind.SHARE, "PLAT_001", 1_000, 0, []),
                         (LegKind.SHARE, "SUP_2025001", 9_001, 9_001, [3_000, 3_000, 3_001])]
    assert ev.legs[1].hold_reason == HoldReason.RELEASE_POLICY
    assert [s.event_name for s in ev.legs[1].release_steps] == ["SHIPPED", "RECEIVED",
                                                                 "CONFIRMED"]


FOUR_STEPS = """
name: four-steps
currency_code: CNY
rules:
  - rule_name: only
    priority: 1
    shares:
      - {label: all, type: SHARE_TYPE_RATIO, ratio_bps: 10000, receiver: {account_ref: ACC_1},
         release: {steps: [{event_name: A, fraction_bps: 1000}, {event_name: B, fraction_bps: 2500},
                           {event_name: C, fraction_bps: 1500}, {event_name: D, fraction_bps: 5000}]}}
"""


def test_four_step_release():
    ev = split(plan_of(FOUR_STEPS), order(999))
    # 10% of 999 = 99 (99.9), 25% = 249 (249.75), 15% = 149 (149.85), last 999 - 497 = 502
    assert _legs(ev) == [(LegKind.SHARE, "ACC_1", 999, 999, [99, 249, 149, 502])]
    ev = split(plan_of(FOUR_STEPS), order(3))
    # floors 0, 0, 0: the last step takes all 3
    assert _legs(ev) == [(LegKind.SHARE, "ACC_1", 3, 3, [0, 0, 0, 3])]


RATIO_SUBSIDY = """
name: ratio-subsidy
currency_code: CNY
rules:
  - rule_name: only
    priority: 1
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1500,
         receiver: {account_ref: PLAT_001}}
      - {label: merchant, type: SHARE_TYPE_RATIO, ratio_bps: 8500,
         receiver: {account_ref: M_10086}}
    subsidies:
      - {label: promo, source_account_ref: MKT, basis: SUBSIDY_BASIS_RATIO, ratio_bps: 250,
         target: SUBSIDY_TARGET_RECEIVER, receiver: {account_ref: M_10086}}
"""


def test_ratio_subsidy_on_an_order_with_a_channel_fee():
    ev = split(plan_of(RATIO_SUBSIDY), order(10_000, channel_fee_minor=60))
    # split: 10000 - 60 = 9940: platform 1491, merchant 8449 (exact: 1491.0 / 8449.0)
    # subsidy: 2.5% of the ORDER's amount 10000 = 250 (not of 9940, which would be 248)
    assert _legs(ev) == [(LegKind.SHARE, "PLAT_001", 1_491, 0, []),
                         (LegKind.SHARE, "M_10086", 8_449, 0, []),
                         (LegKind.SUBSIDY, "M_10086", 250, 0, [])]
    assert ev.legs[2].debit_account_id == ACCOUNTS["MKT"].account_id
    assert (ev.net_amount_minor, ev.distributed_minor, ev.subsidy_minor) == (9_940, 9_940, 250)


FEE_ON_SUBSIDISED_BASE = """
name: fee-on-subsidised-base
currency_code: CNY
rules:
  - rule_name: only
    priority: 1
    fees: [{label: svc, ratio_bps: 600, fixed_minor: 7, account_ref: PLAT_FEE}]
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: PLAT_001}}
      - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: M_10086}}
    subsidies:
      - {label: coupons, source_account_ref: MKT, basis: SUBSIDY_BASIS_PLATFORM_COUPONS,
         target: SUBSIDY_TARGET_SPLIT_BASE}
"""


def test_fee_on_an_order_with_a_subsidy_into_the_split_base():
    o = order(9_000, channel_fee_minor=54, coupons=(
        Coupon("p", 1_000, CouponFunding.PLATFORM), Coupon("s", 500, CouponFunding.SELLER)))
    ev = split(plan_of(FEE_ON_SUBSIDISED_BASE), o)
    # base: 9000 - 54 + 1000 (platform coupon only) = 9946
    # fee: floor(9946 x 6%) + 7 = 596 + 7 = 603 (596.76); left 9343
    # platform floor(934.3) = 934; merchant the rest 8409
    assert [(leg.kind, leg.account_id, leg.amount_minor) for leg in ev.legs] == [
        (LegKind.SUBSIDY, 0, 1_000),
        (LegKind.FEE, ACCOUNTS["PLAT_FEE"].account_id, 603),
        (LegKind.SHARE, ACCOUNTS["PLAT_001"].account_id, 934),
        (LegKind.SHARE, ACCOUNTS["M_10086"].account_id, 8_409)]
    assert (ev.distributed_minor, ev.fee_minor, ev.subsidy_minor) == (9_946, 603, 1_000)
    assert ev.matched_rules[0].base_minor == 9_946


FIXED_ALL = """
name: fixed-all
currency_code: CNY
rules:
  - rule_name: only
    priority: 1
    fees: [{label: svc, fixed_minor: 100, account_ref: PLAT_FEE}]
    shares:
      - {label: insurance, type: SHARE_TYPE_FIXED, fixed_minor: 880, receiver: {account_ref: ACC_1}}
      - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: M_10086}}
"""


def test_a_fixed_share_equal_to_the_whole_distributable_amount_is_accepted():
    plan = plan_of(FIXED_ALL)
    # 1000 - 20 channel fee = 980; fee 100; distributable 880 = the fixed share: accepted,
    # the remainder is 0 (no leg)
    ev = split(plan, order(1_000, channel_fee_minor=20))
    assert [(leg.kind, leg.external_ref, leg.amount_minor) for leg in ev.legs] == [
        (LegKind.FEE, "PLAT_FEE", 100), (LegKind.SHARE, "ACC_1", 880)]
    # one unit less to distribute: 879 < 880 refused
    with pytest.raises(FailedPrecondition) as err:
        split(plan, order(1_000, channel_fee_minor=21))
    assert err.value.reason == "SHARES_EXCEED_AMOUNT"
    assert err.value.metadata == {"shares_minor": "880", "distributable_minor": "879"}


FEE_ALL = """
name: fee-all
currency_code: CNY
rules:
  - rule_name: only
    priority: 1
    fees: [{label: svc, fixed_minor: 500, account_ref: PLAT_FEE},
           {label: min, ratio_bps: 1, min_minor: 200, account_ref: PLAT_FEE}]
    shares:
      - {label: merchant, type: SHARE_TYPE_RATIO, ratio_bps: 10000, receiver: {account_ref: M_10086}}
"""


def test_fees_equal_to_the_whole_base_are_accepted_one_more_refused():
    plan = plan_of(FEE_ALL)
    ev = split(plan, order(700))  # 500 + max(0, 200) = 700 = the base: nothing left to share
    assert [(leg.external_ref, leg.amount_minor) for leg in ev.legs] == [
        ("PLAT_FEE", 500), ("PLAT_FEE", 200)]
    with pytest.raises(FailedPrecondition) as err:
        split(plan, order(699))
    assert err.value.reason == "FEE_EXCEEDS_AMOUNT"
    assert err.value.metadata == {"fee_minor": "700", "base_minor": "699"}
