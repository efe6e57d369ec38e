"""Compiled plans (flat, immutable, bytes round trip) and the proto / YAML conversions."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from clearing.errors import InvalidArgument
from clearing.rules import compile as plans
from clearing.api import rules_proto as proto
from clearing.api import split_convert
from clearing.rules.evaluate import evaluate
from clearing.rules.model import Coupon, CouponFunding
from clearing.v1 import rule_set_pb2
from clearing.v1 import split_pb2 as pb

from tests.unit.rules.helpers import (ACCOUNTS, EXAMPLES, b2b, id_of, order, plan_of,
                                      rule_set)
from tests.unit.rules.test_evaluate import SUBSIDIES, TOP_SLICES
from tests.unit.rules.test_examples import COUPONS, HOSTS, SUPPLIER_TIERS


def test_b2b_plan_is_flat_sorted_and_resolved():
    plan = plan_of(b2b())
    assert (plan.format, plan.rule_set_name, plan.currency_code, plan.level_count) == (
        plans.PLAN_FORMAT, "b2b", "CNY", 1)
    (unit,) = plan.units
    assert [(r.name, r.priority, r.mode) for r in unit.rules] == [
        ("special-government-purchase", 1, plans.MODE_TOP_SLICE),
        ("promotion-enterprise", 2, plans.MODE_ALLOCATE),
        ("base", 3, plans.MODE_ALLOCATE)]
    special, promotion, base = unit.rules
    assert special.condition.tags_any == frozenset({"government purchase"})
    assert promotion.condition.min_amount_minor == 50_000_000
    assert promotion.condition.attributes == (
        plans.AttributeTest("customer_type", True, frozenset({"enterprise"})),)
    assert base.condition is None
    assert [s.target for s in promotion.shares] == [
        plans.Target(id_of("PLAT_001"), "PLAT_001"), plans.Target(id_of("SUP_2025001"),
                                                                  "SUP_2025001"),
        plans.Target(id_of("LOGISTICS_B"), "LOGISTICS_B")]
    assert promotion.ratios_bps == (1000, 7500, 1500)
    assert plan.legs_max == 4


def test_rules_of_the_same_priority_keep_declaration_order():
    text = """
    name: order
    currency_code: CNY
    rules:
      - {rule_name: c, priority: 5, condition: {channels: [X]},
         shares: [{label: p, type: SHARE_TYPE_RATIO, ratio_bps: 10000,
                   receiver: {account_ref: ACC_1}}]}
      - {rule_name: a, priority: 9,
         shares: [{label: p, type: SHARE_TYPE_RATIO, ratio_bps: 10000,
                   receiver: {account_ref: ACC_1}}]}
      - {rule_name: b, priority: 5, condition: {channels: [Y]},
         shares: [{label: p, type: SHARE_TYPE_RATIO, ratio_bps: 10000,
                   receiver: {account_ref: ACC_1}}]}
    """
    assert [r.name for r in plan_of(text).units[0].rules] == ["c", "b", "a"]


ALL = [b2b, lambda: rule_set(TOP_SLICES), lambda: rule_set(SUBSIDIES),
       lambda: rule_set(HOSTS), lambda: rule_set(SUPPLIER_TIERS), lambda: rule_set(COUPONS)]


@pytest.mark.parametrize("make", ALL)
def test_plan_bytes_round_trip_and_are_canonical(make):
    plan = plan_of(make())
    blob = plans.to_bytes(plan)
    again = plans.from_bytes(blob)
    assert again == plan
    assert plans.to_bytes(again) == blob
    assert plans.to_bytes(plan_of(make())) == blob  # compiled twice: the same bytes
    data = json.loads(blob)
    assert data["format"] == plans.PLAN_FORMAT
    assert not any(isinstance(v, float) for v in _leaves(data))


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def test_a_decoded_plan_evaluates_identically():
    plan = plan_of(TOP_SLICES)
    decoded = plans.from_bytes(plans.to_bytes(plan))
    o = order(123_456, tags=("gov",), parties={"merchant": "M_10086"})
    assert evaluate(decoded, o, {}, accounts=ACCOUNTS) == evaluate(plan, o, {}, accounts=ACCOUNTS)


@pytest.mark.parametrize("blob,fragment", [
    (b"not json", "not JSON"),
    (b"[]", "plan format None"),
    (b'{"format": 99}', "plan format 99"),
    (b'{"format": 1}', "fields"),
])
def test_foreign_bytes_are_refused(blob, fragment):
    with pytest.raises(plans.PlanFormatError) as err:
        plans.from_bytes(blob)
    assert fragment in str(err.value)


def test_a_wrong_type_inside_a_plan_is_refused():
    data = json.loads(plans.to_bytes(plan_of(b2b())))
    data["units"][0]["rules"][0]["priority"] = "1"
    with pytest.raises(plans.PlanFormatError):
        plans.from_bytes(json.dumps(data).encode())


def test_proto_model_round_trip_and_yaml_export():
    for make in ALL:
        rs = make()
        msg = proto.rule_set_to_proto(rs)
        assert proto.rule_set_from_proto(msg) == rs
        assert proto.rule_set_from_yaml(proto.rule_set_to_yaml(rs)) == rs
        assert proto.rule_set_from_yaml(proto.rule_set_to_yaml(msg)) == rs


def test_the_yaml_file_is_the_proto_message():
    text = (EXAMPLES / "b2b.yaml").read_text()
    msg = proto.rule_set_proto_from_yaml(text)
    assert msg.rules[0].shares[0].type == rule_set_pb2.SHARE_TYPE_RATIO
    assert (msg.rules[1].condition.attributes[0].comparison
            == rule_set_pb2.ATTRIBUTE_COMPARISON_EQUALS)
    assert proto.rule_set_to_proto(b2b()) == msg


def test_content_sha256_covers_the_filed_content_only():
    msg = proto.rule_set_to_proto(b2b())
    digest = proto.content_sha256(msg)
    assert len(digest) == 64
    stamped = rule_set_pb2.RuleSet()
    stamped.CopyFrom(msg)
    stamped.version, stamped.rule_set_id, stamped.published_by = 7, 99, "key-1"
    assert proto.content_sha256(stamped) == digest
    stamped.rules[0].shares[0].ratio_bps = 201
    assert proto.content_sha256(stamped) != digest


def test_order_and_split_conversions():
    msg = json_format.ParseDict({
        "order_id": "ORD202601200001", "amount_minor": 8000, "currency_code": "CNY",
        "channel": "ALIPAY", "tags": ["a"], "attributes": {"k": "v"},
        "parties": {"seller": "M_10086"}, "paid_time": "2026-01-20T10:00:00Z",
        "coupons": [{"coupon_id": "C", "amount_minor": 2000,
                     "funding": "COUPON_FUNDING_PLATFORM"}]}, pb.Order())
    o = proto.order_from_proto(msg)
    assert (o.order_id, o.amount_minor, o.tags, o.attributes, o.parties) == (
        "ORD202601200001", 8000, ("a",), {"k": "v"}, {"seller": "M_10086"})
    assert o.coupons == (Coupon("C", 2000, CouponFunding.PLATFORM),)
    assert o.paid_time_ns == 1_768_903_200 * 10**9
    ev = evaluate(plan_of(COUPONS), o, {}, accounts=ACCOUNTS)
    split = split_convert.evaluation_to_proto(ev, msg)
    assert [(leg.kind, leg.amount_minor, leg.debit_account_id) for leg in split.legs] == [
        (pb.LEG_KIND_SHARE, 8000, 0), (pb.LEG_KIND_SUBSIDY, 2000, id_of("MKT"))]
    assert (split.distributed_minor, split.subsidy_minor, split.released_minor) == (
        8000, 2000, 10_000)
    assert split.matched_rules[0].rule_name == "seller-gets-all"
    msg.coupons[0].funding = 7
    with pytest.raises(InvalidArgument) as err:
        proto.order_from_proto(msg)
    assert err.value.violations[0].field == "order.coupons[0].funding"
