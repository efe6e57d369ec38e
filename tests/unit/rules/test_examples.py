"""The worked examples of REQUIREMENTS.md that split money, to the exact minor unit (fen).

Every rule set is written in the YAML format publishing accepts.
"""

from __future__ import annotations

from clearing.rules import compile as plans
from clearing.rules.model import Coupon, CouponFunding, HoldReason, LegKind
from clearing.rules.evaluate import CounterUse, StepAmount, evaluate

from tests.unit.rules import examples
from tests.unit.rules.helpers import (ACCOUNTS, b2b, by_ref, id_of, order, plan_of, rule_set,
                                      split)


def test_1_b2b_government_purchase_top_slice_then_promotion():
    """850,000.00: GOV_ACCOUNT 2% = 17,000.00; 833,000.00 by the promotion rule."""
    plan = plan_of(b2b())
    ev = split(plan, order(85_000_000, order_id="ORD202601200001",
                           tags=("enterprise purchase", "government purchase"),
                           attributes={"customer_type": "enterprise"}))
    assert [(leg.external_ref, leg.amount_minor, leg.rule_name) for leg in ev.legs] == [
        ("GOV_ACCOUNT", 1_700_000, "special-government-purchase"),
        ("PLAT_001", 8_330_000, "promotion-enterprise"),
        ("SUP_2025001", 62_475_000, "promotion-enterprise"),
        ("LOGISTICS_B", 12_495_000, "promotion-enterprise")]
    assert [leg.account_id for leg in ev.legs] == [
        id_of("GOV_ACCOUNT"), id_of("PLAT_001"), id_of("SUP_2025001"), id_of("LOGISTICS_B")]
    first, second = ev.matched_rules
    assert (first.rule_name, first.top_slice, first.base_minor, first.passed_on_minor) == (
        "special-government-purchase", True, 85_000_000, 83_300_000)
    assert (second.rule_name, second.base_minor, second.priority) == (
        "promotion-enterprise", 83_300_000, 2)
    assert ev.distributed_minor == ev.net_amount_minor == 85_000_000
    assert ev.held_minor == 0 and ev.fee_minor == 0 and not ev.alerts


def test_1_b2b_other_orders_fall_to_the_right_rule():
    plan = plan_of(b2b())
    no_tag = split(plan, order(85_000_000, attributes={"customer_type": "enterprise"}))
    assert by_ref(no_tag) == {"PLAT_001": 8_500_000, "SUP_2025001": 63_750_000,
                              "LOGISTICS_B": 12_750_000}
    small = split(plan, order(49_999_999, attributes={"customer_type": "enterprise"}))
    assert [m.rule_name for m in small.matched_rules] == ["base"]
    # 4,999,999.9 / 34,999,999.3 / 9,999,999.8: 2 units left, to the .9 and the .8
    assert by_ref(small) == {"PLAT_001": 5_000_000, "SUP_2025001": 34_999_999,
                             "LOGISTICS_B": 10_000_000}
    individual = split(plan, order(85_000_000, tags=("government purchase",),
                                   attributes={"customer_type": "individual"}))
    assert [m.rule_name for m in individual.matched_rules] == [
        "special-government-purchase", "base"]
    assert by_ref(individual) == {"GOV_ACCOUNT": 1_700_000, "PLAT_001": 8_330_000,
                                  "SUP_2025001": 58_310_000, "LOGISTICS_B": 16_660_000}


TAKEAWAY = """
name: takeaway
currency_code: CNY
party_roles: [merchant]
rules:
  - rule_name: takeaway
    priority: 1
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1500,
         receiver: {account_ref: PLAT_001}}
      - {label: merchant, type: SHARE_TYPE_RATIO, ratio_bps: 8500,
         receiver: {party_role: merchant}}
"""


def test_2_takeaway_fee_withheld_by_the_channel():
    """Order 100, fee 2: platform 15% of 98 = 14.70, merchant 85% = 83.30."""
    ev = split(plan_of(TAKEAWAY), order(10_000, channel_fee_minor=200,
                                        parties={"merchant": "M_10086"}))
    assert [(leg.external_ref, leg.amount_minor) for leg in ev.legs] == [
        ("PLAT_001", 1_470), ("M_10086", 8_330)]
    assert ev.net_amount_minor == ev.distributed_minor == 9_800
    assert ev.legs[1].account_id == id_of("M_10086")


def test_2_takeaway_fee_as_a_rule_fee():
    """The same 2 taken by the rule as a fixed service fee instead of by the channel."""
    text = TAKEAWAY.replace(
        "    shares:\n",
        "    fees: [{label: service_fee, fixed_minor: 200, account_ref: PLAT_FEE}]\n"
        "    shares:\n", 1)
    ev = split(plan_of(text), order(10_000, parties={"merchant": "M_10086"}))
    assert [(leg.kind, leg.external_ref, leg.amount_minor) for leg in ev.legs] == [
        (LegKind.FEE, "PLAT_FEE", 200), (LegKind.SHARE, "PLAT_001", 1_470),
        (LegKind.SHARE, "M_10086", 8_330)]
    assert ev.fee_minor == 200 and ev.distributed_minor == 10_000


CLOTHING = """
name: clothing
currency_code: CNY
rules:
  - rule_name: clothing
    priority: 1
    fees: [{label: service_fee, ratio_bps: 100, account_ref: PLAT_FEE}]
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1200,
         receiver: {account_ref: PLAT_001}}
      - {label: supplier, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: SUP_2025001}}
"""


def test_3_clothing_fee_then_12_88():
    """Order 100, fee 1 (1%): platform 12% of 99 = 11.88, supplier 88% = 87.12."""
    ev = split(plan_of(CLOTHING), order(10_000))
    assert [(leg.kind, leg.external_ref, leg.amount_minor) for leg in ev.legs] == [
        (LegKind.FEE, "PLAT_FEE", 100), (LegKind.SHARE, "PLAT_001", 1_188),
        (LegKind.SHARE, "SUP_2025001", 8_712)]
    assert ev.matched_rules[0].fee_minor == 100


LEDGER_WALK = """
name: default
currency_code: CNY
party_roles: [merchant]
rules:
  - rule_name: service-fee-then-merchant
    priority: 1
    fees: [{label: service_fee, fixed_minor: 400, account_ref: PLAT_FUNC}]
    shares:
      - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {party_role: merchant}}
"""


def test_4_ledger_walk_channel_fee_then_service_fee():
    """Order 1000, channel fee 6: 994 arrives; 4 to the functional account, 990 to the
    merchant (the withdrawal that follows is the payout engine's)."""
    ev = split(plan_of(LEDGER_WALK), order(100_000, channel_fee_minor=600,
                                           parties={"merchant": "M_10086"}))
    assert ev.net_amount_minor == 99_400
    assert [(leg.kind, leg.external_ref, leg.amount_minor) for leg in ev.legs] == [
        (LegKind.FEE, "PLAT_FUNC", 400), (LegKind.SHARE, "M_10086", 99_000)]


COUPONS = """
name: coupons
currency_code: CNY
party_roles: [seller]
rules:
  - rule_name: seller-gets-all
    priority: 1
    shares:
      - {label: seller, type: SHARE_TYPE_REMAINDER, receiver: {party_role: seller}}
    subsidies:
      - label: coupon
        source_account_ref: MKT
        basis: SUBSIDY_BASIS_PLATFORM_COUPONS
        target: SUBSIDY_TARGET_RECEIVER
        receiver: {party_role: seller}
"""


def test_5_platform_funded_coupon_seller_gets_100():
    ev = split(plan_of(COUPONS), order(8_000, parties={"seller": "M_10086"}, coupons=(
        Coupon("C20", 2_000, CouponFunding.PLATFORM),)))
    assert [(leg.kind, leg.external_ref, leg.amount_minor, leg.debit_account_id)
            for leg in ev.legs] == [
        (LegKind.SHARE, "M_10086", 8_000, 0),
        (LegKind.SUBSIDY, "M_10086", 2_000, id_of("MKT"))]
    assert by_ref(ev) == {"M_10086": 10_000}
    assert ev.subsidy_minor == 2_000 and ev.distributed_minor == 8_000


def test_5_seller_funded_coupon_seller_gets_80():
    ev = split(plan_of(COUPONS), order(8_000, parties={"seller": "M_10086"}, coupons=(
        Coupon("C20", 2_000, CouponFunding.SELLER),)))
    assert [(leg.kind, leg.amount_minor) for leg in ev.legs] == [(LegKind.SHARE, 8_000)]
    assert ev.subsidy_minor == 0


def test_5_coupon_into_the_split_base_commission_on_the_full_price():
    text = examples.COUPONS_BASE
    ev = split(plan_of(text), order(8_000, parties={"seller": "M_10086"}, coupons=(
        Coupon("C20", 2_000, CouponFunding.PLATFORM),)))
    assert [(leg.kind, leg.account_id, leg.debit_account_id, leg.amount_minor)
            for leg in ev.legs] == [
        (LegKind.SUBSIDY, 0, id_of("MKT"), 1_500),  # capped; into the custodial account
        (LegKind.SHARE, id_of("PLAT_001"), 0, 950),
        (LegKind.SHARE, id_of("M_10086"), 0, 8_550)]
    assert ev.distributed_minor == 9_500 and ev.subsidy_minor == 1_500
    assert ev.matched_rules[0].base_minor == 9_500


BABY = """
name: baby
currency_code: CNY
rules:
  - rule_name: baby-products
    priority: 1
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1500,
         receiver: {account_ref: PLAT_001}}
      - {label: supplier, type: SHARE_TYPE_RATIO, ratio_bps: 7500,
         receiver: {account_ref: SUP_2025001}}
      - {label: distributor, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: DIST_01}}
"""


def test_6_baby_products_15_75_10():
    ev = split(plan_of(BABY), order(100_000))
    assert [leg.amount_minor for leg in ev.legs] == [15_000, 75_000, 10_000]


def test_6_rounding_leftover_goes_to_the_largest_discarded_fractions():
    """99.99: 1499.85 / 7499.25 / 999.90 floor to 1499 / 7499 / 999 (2 units left): the
    distributor (.90) gets one, then the platform (.85)."""
    ev = split(plan_of(BABY), order(9_999))
    assert [leg.amount_minor for leg in ev.legs] == [1_500, 7_499, 1_000]


THIRDS = """
name: thirds
currency_code: CNY
rules:
  - rule_name: thirds
    priority: 1
    shares:
      - {label: a, type: SHARE_TYPE_RATIO, ratio_bps: 3333, receiver: {account_ref: ACC_1}}
      - {label: b, type: SHARE_TYPE_RATIO, ratio_bps: 3333, receiver: {account_ref: ACC_2}}
      - {label: c, type: SHARE_TYPE_RATIO, ratio_bps: 3334, receiver: {account_ref: ACC_3}}
"""


def test_6_ties_go_to_the_share_declared_first():
    plan = plan_of(THIRDS)
    # 1 unit: .3333 / .3333 / .3334 -> c
    assert by_ref(split(plan, order(1))) == {"ACC_3": 1}
    # 2 units: .6666 / .6666 / .6668 -> c, then a (tie with b: a is declared first)
    assert by_ref(split(plan, order(2))) == {"ACC_1": 1, "ACC_3": 1}
    # 100.00: 3333 / 3333 / 3334 exactly
    assert by_ref(split(plan, order(10_000))) == {"ACC_1": 3_333, "ACC_2": 3_333,
                                                  "ACC_3": 3_334}


def test_7_sharing_economy_50_30_15_5():
    text = examples.SHARING
    plan = plan_of(text)
    assert [leg.amount_minor for leg in split(plan, order(100_000)).legs] == [
        50_000, 30_000, 15_000, 5_000]
    # 1,234.57: 61728.5 / 37037.1 / 18518.55 / 6172.85 -> 2 units left, to .85 then .55
    assert [leg.amount_minor for leg in split(plan, order(123_457)).legs] == [
        61_728, 37_037, 18_519, 6_173]


def test_multi_party_ratio_5_3_2_and_fixed_ratio_10_90():
    text = examples.RATIOS
    plan = plan_of(text)
    assert by_ref(split(plan, order(10_000, channel="ALIPAY"))) == {
        "PLAT_001": 1_000, "M_10086": 9_000}
    assert by_ref(split(plan, order(10_000, channel="WECHAT_PAY"))) == {
        "PLAT_001": 5_000, "M_10086": 3_000, "LOGISTICS_B": 2_000}


SCENARIOS = """
name: scenarios
currency_code: CNY
attributes:
  - {key: scenario, allowed_values: [takeaway, saas_renewal]}
party_roles: [merchant, agent]
rules:
  - rule_name: vip-member-fund
    priority: 1
    top_slice: true
    condition: {tags_any: [VIP]}
    shares:
      - {label: member_fund, type: SHARE_TYPE_RATIO, ratio_bps: 300,
         receiver: {account_ref: MEMBER_FUND}}
  - rule_name: takeaway
    priority: 2
    condition:
      attributes: [{key: scenario, comparison: ATTRIBUTE_COMPARISON_EQUALS, values: [takeaway]}]
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1500,
         receiver: {account_ref: PLAT_001}}
      - {label: merchant, type: SHARE_TYPE_RATIO, ratio_bps: 8500,
         receiver: {party_role: merchant}}
  - rule_name: saas-renewal
    priority: 2
    condition:
      attributes: [{key: scenario, comparison: ATTRIBUTE_COMPARISON_EQUALS,
                    values: [saas_renewal]}]
    shares:
      - {label: hq, type: SHARE_TYPE_RATIO, ratio_bps: 500, receiver: {account_ref: PLAT_001}}
      - {label: agent, type: SHARE_TYPE_RATIO, ratio_bps: 1200, receiver: {party_role: agent}}
      - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {party_role: merchant}}
"""


def test_conditional_vip_and_scenario_rules():
    plan = plan_of(SCENARIOS)
    parties = {"merchant": "M_10086", "agent": "DIST_01"}
    vip = split(plan, order(10_000, tags=("VIP",), attributes={"scenario": "takeaway"},
                            parties=parties))
    assert by_ref(vip) == {"MEMBER_FUND": 300, "PLAT_001": 1_455, "M_10086": 8_245}
    saas = split(plan, order(10_000, attributes={"scenario": "saas_renewal"},
                             parties=parties))
    assert by_ref(saas) == {"PLAT_001": 500, "DIST_01": 1_200, "M_10086": 8_300}


def test_release_half_on_shipped_half_on_received():
    text = examples.HELD
    ev = split(plan_of(text), order(1_113))
    platform, supplier = ev.legs
    assert (platform.amount_minor, platform.held_minor, platform.release_steps) == (111, 0, ())
    assert supplier.amount_minor == supplier.held_minor == 1_002
    assert supplier.hold_reason == HoldReason.RELEASE_POLICY
    assert supplier.release_steps == (StepAmount("SHIPPED", 5000, 501),
                                      StepAmount("RECEIVED", 5000, 501))
    odd = split(plan_of(text), order(1_112)).legs[1]  # 1001: the last step takes the rest
    assert odd.release_steps == (StepAmount("SHIPPED", 5000, 500),
                                 StepAmount("RECEIVED", 5000, 501))
    assert ev.held_minor == 1_002


def test_whole_split_held_until_signed_for():
    text = BABY.replace(
        "receiver: {account_ref: DIST_01}}",
        "receiver: {account_ref: DIST_01},\n"
        "         release: {steps: [{event_name: SIGNED_FOR, fraction_bps: 10000}]}}")
    ev = split(plan_of(text), order(10_000))
    assert [(leg.held_minor, [s.event_name for s in leg.release_steps]) for leg in ev.legs] == [
        (0, []), (0, []), (1_000, ["SIGNED_FOR"])]


SUPPLIER_TIERS = """
name: supplier-tiers
currency_code: CNY
counters:
  - {name: supplier_orders_month, metric: COUNTER_METRIC_ORDER_COUNT,
     period: COUNTER_PERIOD_MONTH, account_ref: SUP_2025001}
rules:
  - rule_name: tiered
    priority: 1
    shares:
      - label: supplier
        type: SHARE_TYPE_RATIO
        ratio_bps: 7000
        receiver: {account_ref: SUP_2025001}
        tiers:
          counter_name: supplier_orders_month
          effect: TIER_EFFECT_ADD
          tiers: [{min_counter_value: 1000, ratio_bps: 500}]
      - {label: logistics, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: LOGISTICS_B}}
      - {label: platform, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: PLAT_001}}
"""


def test_tier_supplier_reaches_1000_orders_plus_5_points():
    plan = plan_of(SUPPLIER_TIERS)
    before = split(plan, order(100_000), {"supplier_orders_month": 999})
    assert by_ref(before) == {"SUP_2025001": 70_000, "LOGISTICS_B": 10_000, "PLAT_001": 20_000}
    assert before.legs[0].ratio_bps == 7000
    at = split(plan, order(100_000), {"supplier_orders_month": 1000})
    assert by_ref(at) == {"SUP_2025001": 75_000, "LOGISTICS_B": 10_000, "PLAT_001": 15_000}
    assert at.legs[0].ratio_bps == 7500
    assert at.counter_values == (CounterUse("supplier_orders_month", "SUP_2025001", 1000),)


HOSTS = """
name: live
currency_code: CNY
attributes: [{key: host_level, allowed_values: [new, top]}]
party_roles: [host]
counters:
  - {name: host_gmv_lifetime, metric: COUNTER_METRIC_AMOUNT_MINOR,
     period: COUNTER_PERIOD_LIFETIME, party_role: host}
rules:
  - rule_name: new-host
    priority: 1
    condition:
      attributes: [{key: host_level, comparison: ATTRIBUTE_COMPARISON_NOT_EQUALS, values: [top]}]
    shares:
      - label: host
        type: SHARE_TYPE_RATIO
        ratio_bps: 2500
        receiver: {party_role: host}
        tiers:
          counter_name: host_gmv_lifetime
          effect: TIER_EFFECT_ADD
          tiers: [{min_counter_value: 500000001, ratio_bps: 500}]  # GMV > 5,000,000.00
      - {label: platform, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: PLAT_001}}
  - rule_name: top-host
    priority: 1
    condition:
      attributes: [{key: host_level, comparison: ATTRIBUTE_COMPARISON_EQUALS, values: [top]}]
    shares:
      - label: host
        type: SHARE_TYPE_RATIO
        ratio_bps: 3000
        receiver: {party_role: host}
        tiers:
          counter_name: host_gmv_lifetime
          effect: TIER_EFFECT_ADD
          tiers: [{min_counter_value: 500000001, ratio_bps: 500}]
      - {label: platform, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: PLAT_001}}
"""


def test_tier_host_gmv_over_5_million_plus_5_percent():
    plan = plan_of(HOSTS)
    host = {"host": "HOST_01"}
    cases = [("new", 500_000_000, 2_500), ("new", 500_000_001, 3_000),
             ("top", 500_000_000, 3_000), ("top", 900_000_000, 3_500)]
    for level, gmv, host_minor in cases:
        ev = split(plan, order(10_000, parties=host, attributes={"host_level": level}),
                   {"host_gmv_lifetime": gmv})
        assert by_ref(ev) == {"HOST_01": host_minor, "PLAT_001": 10_000 - host_minor}
        assert ev.counter_values == (CounterUse("host_gmv_lifetime", "HOST_01", gmv),)


def test_multi_level_platform_then_supplier_split_again():
    """Platform 10%; the supplier's 90% is split again by its own rule set: distributor
    10% of it, the supplier the rest."""
    sub = """
    name: supplier-own
    currency_code: CNY
    version: 3
    rules:
      - rule_name: distributor-cut
        priority: 1
        shares:
          - {label: distributor, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
             receiver: {account_ref: DIST_01}}
          - {label: supplier, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: SUP_2025001}}
    """
    root = examples.PLATFORM_LEVELS
    supplier = rule_set(sub)
    plan = plan_of(root, lambda name, version: supplier if name == "supplier-own" else None)
    assert plan.level_count == 2
    assert plan.pinned == (plans.PinnedRef("supplier-own", 0, 3),)
    ev = evaluate(plan, order(100_000), {}, accounts=ACCOUNTS)
    assert [(leg.external_ref, leg.amount_minor, leg.level, leg.rule_set_name,
             leg.rule_set_version) for leg in ev.legs] == [
        ("PLAT_001", 10_000, 1, "platform", 0),
        ("DIST_01", 9_000, 2, "supplier-own", 3),
        ("SUP_2025001", 81_000, 2, "supplier-own", 3)]
    assert [(m.rule_name, m.level, m.parent_match_index, m.base_minor)
            for m in ev.matched_rules] == [("platform-cut", 1, -1, 100_000),
                                           ("distributor-cut", 2, 0, 90_000)]
