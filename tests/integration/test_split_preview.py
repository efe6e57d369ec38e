"""PreviewSplit through the generated stubs: every worked example of REQUIREMENTS.md that
splits money, to the exact minor unit, with nothing posted."""

from __future__ import annotations

import grpc
import pytest

from clearing.v1 import split_pb2 as pb
from tests.split_support import by_ref, file_examples, order
from tests.support import Client, details

PLATFORM_COUPON = pb.COUPON_FUNDING_PLATFORM
SELLER_COUPON = pb.COUPON_FUNDING_SELLER
B2B_TAGS = ["enterprise purchase", "government purchase"]
ENTERPRISE = {"customer_type": "enterprise"}

# (rule set, order fields, credited per account ref)
CASES = [
    ("b2b", dict(amount_minor=85_000_000, tags=B2B_TAGS, attributes=ENTERPRISE),
     {"GOV_ACCOUNT": 1_700_000, "PLAT_001": 8_330_000, "SUP_2025001": 62_475_000,
      "LOGISTICS_B": 12_495_000}),
    ("b2b", dict(amount_minor=85_000_000, attributes=ENTERPRISE),
     {"PLAT_001": 8_500_000, "SUP_2025001": 63_750_000, "LOGISTICS_B": 12_750_000}),
    ("b2b", dict(amount_minor=49_999_999, attributes=ENTERPRISE),
     {"PLAT_001": 5_000_000, "SUP_2025001": 34_999_999, "LOGISTICS_B": 10_000_000}),
    ("b2b", dict(amount_minor=85_000_000, tags=["government purchase"],
                 attributes={"customer_type": "individual"}),
     {"GOV_ACCOUNT": 1_700_000, "PLAT_001": 8_330_000, "SUP_2025001": 58_310_000,
      "LOGISTICS_B": 16_660_000}),
    ("takeaway", dict(amount_minor=10_000, channel_fee_minor=200,
                      parties={"merchant": "M_10086"}),
     {"PLAT_001": 1_470, "M_10086": 8_330}),
    ("takeaway-fee", dict(amount_minor=10_000, parties={"merchant": "M_10086"}),
     {"PLAT_FEE": 200, "PLAT_001": 1_470, "M_10086": 8_330}),
    ("clothing", dict(amount_minor=10_000),
     {"PLAT_FEE": 100, "PLAT_001": 1_188, "SUP_2025001": 8_712}),
    ("", dict(amount_minor=100_000, channel_fee_minor=600, parties={"merchant": "M_10086"}),
     {"PLAT_FUNC": 400, "M_10086": 99_000}),
    ("coupons", dict(amount_minor=8_000, parties={"seller": "M_10086"},
                     coupons=[pb.Coupon(coupon_id="C20", amount_minor=2_000,
                                        funding=PLATFORM_COUPON)]),
     {"M_10086": 10_000}),
    ("coupons", dict(amount_minor=8_000, parties={"seller": "M_10086"},
                     coupons=[pb.Coupon(coupon_id="C20", amount_minor=2_000,
                                        funding=SELLER_COUPON)]),
     {"M_10086": 8_000}),
    ("coupons-base", dict(amount_minor=8_000, parties={"seller": "M_10086"},
                          coupons=[pb.Coupon(coupon_id="C20", amount_minor=2_000,
                                             funding=PLATFORM_COUPON)]),
     {"CUSTODIAL": 1_500, "PLAT_001": 950, "M_10086": 8_550}),
    ("baby", dict(amount_minor=100_000),
     {"PLAT_001": 15_000, "SUP_2025001": 75_000, "DIST_01": 10_000}),
    ("baby", dict(amount_minor=9_999),
     {"PLAT_001": 1_500, "SUP_2025001": 7_499, "DIST_01": 1_000}),
    ("thirds", dict(amount_minor=1), {"ACC_3": 1}),
    ("thirds", dict(amount_minor=2), {"ACC_1": 1, "ACC_3": 1}),
    ("thirds", dict(amount_minor=10_000), {"ACC_1": 3_333, "ACC_2": 3_333, "ACC_3": 3_334}),
    ("sharing", dict(amount_minor=100_000),
     {"OWNER_01": 50_000, "PLAT_001": 30_000, "SERVICE_01": 15_000, "CHANNEL_01": 5_000}),
    ("sharing", dict(amount_minor=123_457),
     {"OWNER_01": 61_728, "PLAT_001": 37_037, "SERVICE_01": 18_519, "CHANNEL_01": 6_173}),
    ("ratios", dict(amount_minor=10_000, channel="ALIPAY"), {"PLAT_001": 1_000, "M_10086": 9_000}),
    ("ratios", dict(amount_minor=10_000),
     {"PLAT_001": 5_000, "M_10086": 3_000, "LOGISTICS_B": 2_000}),
    ("scenarios", dict(amount_minor=10_000, tags=["VIP"], attributes={"scenario": "takeaway"},
                       parties={"merchant": "M_10086", "agent": "DIST_01"}),
     {"MEMBER_FUND": 300, "PLAT_001": 1_455, "M_10086": 8_245}),
    ("scenarios", dict(amount_minor=10_000, attributes={"scenario": "saas_renewal"},
                       parties={"merchant": "M_10086", "agent": "DIST_01"}),
     {"PLAT_001": 500, "DIST_01": 1_200, "M_10086": 8_300}),
    ("platform", dict(amount_minor=100_000),
     {"PLAT_001": 10_000, "DIST_01": 9_000, "SUP_2025001": 81_000}),
]


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    return await file_examples(channel, client, database_url, platform.platform_id)


def _ref_with_custodial(split: pb.Split, ids: dict[str, int]) -> dict[str, int]:
    """by_ref, naming the custodial account (a subsidy into the split base) CUSTODIAL."""
    out = by_ref(split)
    if "" in out:
        out["CUSTODIAL"] = out.pop("")
    return out


async def test_every_worked_example(world, client: Client):
    splits, ids = world
    for name, fields, expected in CASES:
        split = await splits.preview(order(rule_set_name=name, **fields))
        assert _ref_with_custodial(split, ids) == expected, (name, fields)
        assert split.status == pb.SPLIT_STATUS_PREVIEW and split.split_id == 0
        assert sum(leg.amount_minor for leg in split.legs
                   if leg.kind != pb.LEG_KIND_SUBSIDY) == split.distributed_minor
    custodial = await client.balance(ids["CUSTODIAL"])
    assert (custodial.posted_minor, custodial.pending_debit_minor) == (0, 0)  # nothing posted


async def test_legs_name_rules_accounts_and_matched_rules(world):
    splits, ids = world
    split = await splits.preview(order(85_000_000, rule_set_name="b2b", tags=B2B_TAGS,
                                       attributes=ENTERPRISE))
    assert [(leg.account_id, leg.debit_account_id, leg.rule_name) for leg in split.legs] == [
        (ids["GOV_ACCOUNT"], ids["CUSTODIAL"], "special-government-purchase"),
        (ids["PLAT_001"], ids["CUSTODIAL"], "promotion-enterprise"),
        (ids["SUP_2025001"], ids["CUSTODIAL"], "promotion-enterprise"),
        (ids["LOGISTICS_B"], ids["CUSTODIAL"], "promotion-enterprise")]
    assert [(m.rule_name, m.top_slice, m.base_minor, m.passed_on_minor)
            for m in split.matched_rules] == [
        ("special-government-purchase", True, 85_000_000, 83_300_000),
        ("promotion-enterprise", False, 83_300_000, 0)]
    assert (split.rule_set_name, split.rule_set_version) == ("b2b", 1)
    coupon = await splits.preview(order(8_000, rule_set_name="coupons",
                                        parties={"seller": "M_10086"},
                                        coupons=[pb.Coupon(coupon_id="C", amount_minor=2_000,
                                                           funding=PLATFORM_COUPON)]))
    assert [(leg.kind, leg.debit_account_id, leg.amount_minor) for leg in coupon.legs] == [
        (pb.LEG_KIND_SHARE, ids["CUSTODIAL"], 8_000), (pb.LEG_KIND_SUBSIDY, ids["MKT"], 2_000)]


async def test_held_legs_and_release_steps(world):
    splits, _ = world
    split = await splits.preview(order(1_113, rule_set_name="held"))
    platform, supplier = split.legs
    assert (platform.amount_minor, platform.held_minor) == (111, 0)
    assert (supplier.amount_minor, supplier.held_minor) == (1_002, 1_002)
    assert supplier.hold_reason == pb.HOLD_REASON_RELEASE_POLICY
    assert [(s.event_name, s.amount_minor) for s in supplier.release_steps] == [
        ("SHIPPED", 501), ("RECEIVED", 501)]
    assert split.held_minor == 1_002
    signed = await splits.preview(order(10_000, rule_set_name="signed-for"))
    assert [leg.held_minor for leg in signed.legs] == [0, 0, 1_000]


async def test_tiers_with_counter_overrides(world):
    splits, _ = world
    before = await splits.preview(order(100_000, rule_set_name="supplier-tiers"),
                                  counter_overrides={"supplier_orders_month": 999})
    assert by_ref(before) == {"SUP_2025001": 70_000, "LOGISTICS_B": 10_000, "PLAT_001": 20_000}
    at = await splits.preview(order(100_000, rule_set_name="supplier-tiers"),
                              counter_overrides={"supplier_orders_month": 1000})
    assert by_ref(at) == {"SUP_2025001": 75_000, "LOGISTICS_B": 10_000, "PLAT_001": 15_000}
    assert [(c.counter_name, c.subject, c.value, c.source) for c in at.counter_values] == [
        ("supplier_orders_month", "SUP_2025001", 1000, pb.COUNTER_SOURCE_OVERRIDE)]
    live = await splits.preview(order(100_000, rule_set_name="supplier-tiers"))
    assert [(c.value, c.source) for c in live.counter_values] == [(1, pb.COUNTER_SOURCE_LIVE)]
    for level, gmv, host_minor in [("new", 500_000_000, 2_500), ("new", 500_000_001, 3_000),
                                   ("top", 500_000_000, 3_000), ("top", 900_000_000, 3_500)]:
        ev = await splits.preview(order(10_000, rule_set_name="live",
                                        parties={"host": "HOST_01"},
                                        attributes={"host_level": level}),
                                  counter_overrides={"host_gmv_lifetime": gmv})
        assert by_ref(ev) == {"HOST_01": host_minor, "PLAT_001": 10_000 - host_minor}


async def test_frozen_and_closed_receivers_are_held(world):
    splits, ids = world
    for ref, reason in (("M_FROZEN", "RECEIVER_FROZEN"), ("M_CLOSED", "RECEIVER_CLOSED")):
        split = await splits.preview(order(10_000, rule_set_name="frozen",
                                           parties={"merchant": ref}))
        merchant = split.legs[1]
        assert (merchant.held_minor, merchant.hold_reason) == (
            9_000, pb.HOLD_REASON_RECEIVER_UNAVAILABLE)
        assert [(a.reason, a.account_id, a.leg_index) for a in split.alerts] == [
            (reason, ids[ref], 1)]


async def test_a_published_version_can_be_previewed_before_activation(world):
    splits, _ = world
    text = (await splits.call("GetRuleSet", pb.GetRuleSetRequest(rule_set_name="baby"))).rule_set
    text.rules[0].shares[0].ratio_bps, text.rules[0].shares[1].ratio_bps = 2000, 7000
    await splits.call("PublishRuleSet", pb.PublishRuleSetRequest(request_id="baby-2",
                                                                 rule_set=text))
    tried = await splits.preview(order(100_000, rule_set_name="baby"), rule_set_version=2)
    assert [leg.amount_minor for leg in tried.legs] == [20_000, 70_000, 10_000]
    active = await splits.preview(order(100_000, rule_set_name="baby"))
    assert [leg.amount_minor for leg in active.legs] == [15_000, 75_000, 10_000]


async def test_preview_errors(world):
    splits, _ = world
    cases = [
        (order(0, rule_set_name="baby", currency_code="XXX1"), grpc.StatusCode.INVALID_ARGUMENT,
         "INVALID_ARGUMENT", ["order.amount_minor", "order.currency_code"]),
        (order(100, rule_set_name="baby", currency_code="USD"),
         grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_MISMATCH", ["order.currency_code"]),
        (order(100, rule_set_name="nothing"), grpc.StatusCode.FAILED_PRECONDITION,
         "NO_ACTIVE_RULE_SET", []),
        (order(100, rule_set_name="takeaway"), grpc.StatusCode.INVALID_ARGUMENT,
         "INVALID_ORDER", ["order.parties[merchant]"]),
        (order(100, rule_set_name="ratios", channel=""), grpc.StatusCode.INVALID_ARGUMENT,
         "INVALID_ARGUMENT", ["order.channel"]),
    ]
    for request, code, reason, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await splits.preview(request)
        assert (err.value.code(), details(err.value)) == (code, (reason, fields)), request
