"""Validation: every problem is reported, each with its proto field path."""

from __future__ import annotations

import copy

import pytest
from google.protobuf import json_format

from clearing.errors import InvalidArgument
from clearing.limits import LEVELS_MAX
from clearing.rules import compile as plans
from clearing.api import rules_proto as proto
from clearing.rules.validate import validate
from clearing.v1 import rule_set_pb2

from tests.unit.rules.helpers import ACCOUNTS, b2b, rule_set


def _share(label, ratio_bps=0, ref="", role="", kind="SHARE_TYPE_RATIO", **kw):
    receiver = {"account_ref": ref} if ref else {"party_role": role} if role else {}
    out = {"label": label, "type": kind, "receiver": receiver, **kw}
    if ratio_bps:
        out["ratio_bps"] = ratio_bps
    return out


BASE = {
    "name": "base",
    "currency_code": "CNY",
    "attributes": [{"key": "customer_type", "allowed_values": ["enterprise", "individual"]}],
    "party_roles": ["merchant"],
    "counters": [{"name": "merchant_orders", "metric": "COUNTER_METRIC_ORDER_COUNT",
                  "period": "COUNTER_PERIOD_MONTH", "party_role": "merchant"}],
    "rules": [
        {"rule_name": "vip", "priority": 1, "top_slice": True,
         "condition": {"tags_any": ["vip"], "attributes": [
             {"key": "customer_type", "comparison": "ATTRIBUTE_COMPARISON_EQUALS",
              "values": ["enterprise"]}]},
         "shares": [_share("member", 300, ref="MEMBER_FUND")]},
        {"rule_name": "main", "priority": 2,
         "fees": [{"label": "service", "ratio_bps": 100, "account_ref": "PLAT_FEE"}],
         "shares": [
             _share("platform", 1000, ref="PLAT_001"),
             _share("merchant", 7000, role="merchant",
                    tiers={"counter_name": "merchant_orders", "effect": "TIER_EFFECT_ADD",
                           "tiers": [{"min_counter_value": 100, "ratio_bps": 200},
                                     {"min_counter_value": 1000, "ratio_bps": 500}]},
                    release={"steps": [{"event_name": "SHIPPED", "fraction_bps": 5000},
                                       {"event_name": "RECEIVED", "fraction_bps": 5000}]}),
             _share("logistics", ref="LOGISTICS_B", kind="SHARE_TYPE_REMAINDER")],
         "subsidies": [{"label": "coupon", "source_account_ref": "MKT",
                        "basis": "SUBSIDY_BASIS_PLATFORM_COUPONS",
                        "target": "SUBSIDY_TARGET_RECEIVER",
                        "receiver": {"party_role": "merchant"}}]},
    ],
}


def _model(data: dict):
    return proto.rule_set_from_proto(json_format.ParseDict(data, rule_set_pb2.RuleSet()))


def _problems(mutate, resolver=None) -> dict[str, str]:
    data = copy.deepcopy(BASE)
    mutate(data)
    out: dict[str, str] = {}
    for v in validate(_model(data), ACCOUNTS, resolver):
        out[v.field] = f"{out[v.field]}; {v.description}" if v.field in out else v.description
    return out


def test_the_base_rule_set_and_the_b2b_example_are_valid():
    assert validate(_model(BASE), ACCOUNTS) == []
    assert validate(b2b(), ACCOUNTS) == []


def _set(path: str, value):
    """A mutation setting `path` (dotted, with [i]) to value; None deletes it."""
    def mutate(data):
        *parents, last = path.replace("]", "").replace("[", ".").split(".")
        node = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is None:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return mutate


R0, R1 = "rules[0]", "rules[1]"
CASES = [
    # shares over 100% in a rule: reported where the running sum passes 10000
    ("shares over 100%", _set("rules.1.shares.0.ratio_bps", 3000),
     f"{R1}.shares[1].ratio_bps", "over 10000"),
    ("no remainder receiver", _set("rules.1.shares.2", _share("x", 1000, ref="ACC_1")),
     f"{R1}.shares", "needs a REMAINDER share"),
    ("ratios short of 100% without remainder",
     lambda d: d["rules"][1].update(shares=[_share("p", 9000, ref="PLAT_001")]),
     f"{R1}.shares", "sum to 9000 bps"),
    ("fixed share without remainder",
     lambda d: d["rules"][1].update(shares=[
         _share("p", ref="PLAT_001", kind="SHARE_TYPE_FIXED", fixed_minor=100)]),
     f"{R1}.shares", "add a REMAINDER share"),
    ("unknown account", _set("rules.1.shares.0.receiver.account_ref", "NOPE"),
     f"{R1}.shares[0].receiver.account_ref", "unknown account 'NOPE'"),
    ("currency mismatch", _set("rules.1.shares.0.receiver.account_ref", "USD_ACC"),
     f"{R1}.shares[0].receiver.account_ref", "holds USD"),
    ("closed account", _set("rules.1.shares.0.receiver.account_ref", "M_CLOSED"),
     f"{R1}.shares[0].receiver.account_ref", "is closed"),
    ("custodial receiver", _set("rules.1.fees.0.account_ref", "CUSTODIAL"),
     f"{R1}.fees[0].account_ref", "custodial"),
    ("subsidy from a merchant", _set("rules.1.subsidies.0.source_account_ref", "M_10086"),
     f"{R1}.subsidies[0].source_account_ref", "marketing or functional"),
    ("undeclared attribute", _set("rules.0.condition.attributes.0.key", "vip_level"),
     f"{R0}.condition.attributes[0].key", "not declared"),
    ("value not allowed", _set("rules.0.condition.attributes.0.values", ["government"]),
     f"{R0}.condition.attributes[0].values[0]", "not an allowed value"),
    ("undeclared party role", _set("rules.1.shares.1.receiver.party_role", "supplier"),
     f"{R1}.shares[1].receiver.party_role", "not declared"),
    ("overlapping priorities", _set("rules.0.priority", 2),
     f"{R1}.priority", "overlapping priorities"),
    ("negative fee", _set("rules.1.fees.0.fixed_minor", -1),
     f"{R1}.fees[0].fixed_minor", "negative"),
    ("fee of nothing", _set("rules.1.fees.0.ratio_bps", 0),
     f"{R1}.fees[0].ratio_bps", "above zero"),
    ("fee max below min", lambda d: d["rules"][1]["fees"][0].update(min_minor=50, max_minor=10),
     f"{R1}.fees[0].max_minor", "at least min_minor"),
    ("zero fixed share", lambda d: d["rules"][1]["shares"].__setitem__(0, _share(
        "p", ref="PLAT_001", kind="SHARE_TYPE_FIXED")),
     f"{R1}.shares[0].fixed_minor", "positive"),
    ("negative threshold", _set("rules.0.condition.min_amount_minor", -5),
     f"{R0}.condition.min_amount_minor", "negative"),
    ("max below min amount",
     lambda d: d["rules"][0]["condition"].update(min_amount_minor=500, max_amount_minor=500),
     f"{R0}.condition.max_amount_minor", "exceed min_amount_minor"),
    ("bps above 10000", _set("rules.0.shares.0.ratio_bps", 10001),
     f"{R0}.shares[0].ratio_bps", "1 to 10000"),
    ("fee bps above 10000", _set("rules.1.fees.0.ratio_bps", 20000),
     f"{R1}.fees[0].ratio_bps", "0 to 10000"),
    ("negative bps", _set("rules.0.shares.0.ratio_bps", -1),
     f"{R0}.shares[0].ratio_bps", "1 to 10000"),
    ("ratio share of zero", _set("rules.0.shares.0.ratio_bps", None),
     f"{R0}.shares[0].ratio_bps", "1 to 10000"),
    ("tiers not increasing", _set("rules.1.shares.1.tiers.tiers.1.min_counter_value", 100),
     f"{R1}.shares[1].tiers.tiers[1].min_counter_value", "strictly increasing"),
    ("tier over 100%", _set("rules.1.shares.1.tiers.tiers.1.ratio_bps", 3500),
     f"{R1}.shares[1].tiers.tiers[1].ratio_bps", "over 10000"),
    ("tier on an unknown counter", _set("rules.1.shares.1.tiers.counter_name", "gmv"),
     f"{R1}.shares[1].tiers.counter_name", "not defined"),
    ("tier effect unset", _set("rules.1.shares.1.tiers.effect", None),
     f"{R1}.shares[1].tiers.effect", "UNSPECIFIED"),
    ("tiers without a remainder share",
     lambda d: d["rules"][1]["shares"].__setitem__(2, _share("l", 2000, ref="LOGISTICS_B")),
     f"{R1}.shares", "tiered shares needs a REMAINDER"),
    ("release fractions not 100%", _set("rules.1.shares.1.release.steps.1.fraction_bps", 4000),
     f"{R1}.shares[1].release.steps", "sum to 9000"),
    ("release event not UPPER_SNAKE", _set("rules.1.shares.1.release.steps.0.event_name",
                                           "shipped"),
     f"{R1}.shares[1].release.steps[0].event_name", "UPPER_SNAKE"),
    ("release event repeated", _set("rules.1.shares.1.release.steps.1.event_name", "SHIPPED"),
     f"{R1}.shares[1].release.steps[1].event_name", "repeated"),
    ("remainder in a top-slice rule", _set("rules.0.shares.0.type", "SHARE_TYPE_REMAINDER"),
     f"{R0}.shares[0].type", "top-slice"),
    ("two remainders", lambda d: d["rules"][1]["shares"].append(
        _share("x", ref="ACC_1", kind="SHARE_TYPE_REMAINDER")),
     f"{R1}.shares[3].type", "at most one REMAINDER"),
    ("share type unset", _set("rules.1.shares.0.type", None),
     f"{R1}.shares[0].type", "UNSPECIFIED"),
    ("no receiver", _set("rules.1.shares.0.receiver", {}),
     f"{R1}.shares[0].receiver", "required"),
    ("too many rules", lambda d: d["rules"].extend(
        {"rule_name": f"r{i}", "priority": 3 + i,
         "shares": [_share("p", 10000, ref="PLAT_001")]} for i in range(199)),
     "rules", "more than 200"),
    ("too many shares", lambda d: d["rules"][1]["shares"].extend(
        _share(f"s{i}", 1, ref="ACC_1") for i in range(30)),
     f"{R1}.shares", "more than 32"),
    ("every rule top-slice", _set("rules.1.top_slice", True), "rules", "every rule is top-slice"),
    ("bad rule-set name", _set("name", "B2B!"), "name", "a-z"),
    ("unknown currency", _set("currency_code", "XXX"), "currency_code", "ISO 4217"),
    ("priority 0", _set("rules.0.priority", 0), f"{R0}.priority", "1 to 1000"),
    ("window ends before it starts",
     lambda d: d["rules"][0].update(start_time="2026-02-01T00:00:00Z",
                                    end_time="2026-01-01T00:00:00Z"),
     f"{R0}.end_time", "after start_time"),
    ("condition on another currency", _set("rules.0.condition.currency_codes", ["USD"]),
     f"{R0}.condition.currency_codes[0]", "CNY only"),
    ("EQUALS with two values", _set("rules.0.condition.attributes.0.values",
                                    ["enterprise", "individual"]),
     f"{R0}.condition.attributes[0].values", "exactly one value"),
    ("empty tag", _set("rules.0.condition.tags_any", [""]),
     f"{R0}.condition.tags_any[0]", "1 to 64"),
    ("counter without subject", _set("counters.0.party_role", None),
     "counters[0].subject", "exactly one"),
    ("counter time zone", _set("counters.0.time_zone", "Mars/Olympus"),
     "counters[0].time_zone", "IANA"),
    ("counter time zone a tz folder", _set("counters.0.time_zone", "America"),
     "counters[0].time_zone", "IANA"),
    ("counter time zone a path", _set("counters.0.time_zone", "UTC/../x"),
     "counters[0].time_zone", "IANA"),
    ("counter time zone with NUL", _set("counters.0.time_zone", "Asia/Shanghai\0"),
     "counters[0].time_zone", "IANA"),
    ("subsidy paid to its own source", _set("rules.1.subsidies.0.receiver",
                                            {"account_ref": "MKT"}),
     f"{R1}.subsidies[0].receiver.account_ref", "source account cannot receive"),
    ("account ref with NUL", _set("rules.1.shares.0.receiver.account_ref", "PLAT\0001"),
     f"{R1}.shares[0].receiver.account_ref", "NUL"),
    ("fixed subsidy beyond the maximum amount", lambda d: d["rules"][1]["subsidies"][0].update(
        basis="SUBSIDY_BASIS_FIXED", fixed_minor=10**15 + 1),
     f"{R1}.subsidies[0].fixed_minor", "maximum of 1000000000000000"),
    ("subsidy cap beyond the maximum amount", _set("rules.1.subsidies.0.cap_minor", 2**63 - 1),
     f"{R1}.subsidies[0].cap_minor", "maximum of 1000000000000000"),
    ("fee beyond the maximum amount", _set("rules.1.fees.0.fixed_minor", 10**15 + 1),
     f"{R1}.fees[0].fixed_minor", "maximum"),
    ("fee maximum beyond the maximum amount", _set("rules.1.fees.0.max_minor", 2**63 - 1),
     f"{R1}.fees[0].max_minor", "maximum"),
    ("condition beyond the maximum amount", _set("rules.0.condition.max_amount_minor",
                                                 10**15 + 1),
     f"{R0}.condition.max_amount_minor", "maximum"),
    ("sub-rule-set version beyond int32",
     _set("rules.1.shares.0.receiver", {"rule_set": {"rule_set_name": "x",
                                                     "rule_set_version": 2**31}}),
     f"{R1}.shares[0].receiver.rule_set.rule_set_version", "1 to 2147483647"),
    ("counter metric unset", _set("counters.0.metric", None), "counters[0].metric",
     "UNSPECIFIED"),
    ("attribute declared twice", lambda d: d["attributes"].append({"key": "customer_type"}),
     "attributes[1].key", "declared twice"),
    ("party role declared twice", lambda d: d["party_roles"].append("merchant"),
     "party_roles[1]", "declared twice"),
    ("rule name used twice", _set("rules.1.rule_name", "vip"), f"{R1}.rule_name", "twice"),
    ("split-base subsidy with a receiver", _set("rules.1.subsidies.0.target",
                                                "SUBSIDY_TARGET_SPLIT_BASE"),
     f"{R1}.subsidies[0].receiver", "split base has no receiver"),
    ("subsidy to a sub-rule-set", _set("rules.1.subsidies.0.receiver",
                                       {"rule_set": {"rule_set_name": "x"}}),
     f"{R1}.subsidies[0].receiver.rule_set", "cannot go to a sub-rule-set"),
    ("fixed subsidy of 0", _set("rules.1.subsidies.0.basis", "SUBSIDY_BASIS_FIXED"),
     f"{R1}.subsidies[0].fixed_minor", "positive"),
    ("unknown sub-rule-set", _set("rules.1.shares.2.receiver", {"rule_set": {
        "rule_set_name": "nowhere"}}),
     f"{R1}.shares[2].receiver.rule_set", "no rule set 'nowhere'"),
    ("more legs than a split holds", lambda d: d["rules"].extend(
        {"rule_name": f"top{i}", "priority": 10 + i, "top_slice": True,
         "shares": [_share(f"s{j}", 1, ref="ACC_1") for j in range(32)]} for i in range(8)),
     "rules", "more than 256"),
]


@pytest.mark.parametrize("mutate,path,fragment", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_each_problem_has_its_field_path(mutate, path, fragment):
    problems = _problems(mutate)
    assert path in problems, problems
    assert fragment in problems[path]


def test_every_problem_is_reported_at_once_with_a_prefix():
    data = copy.deepcopy(BASE)
    chosen = {"shares over 100%", "unknown account", "undeclared attribute",
              "overlapping priorities", "release event repeated", "counter time zone"}
    for name, mutate, _, _ in CASES:
        if name in chosen:
            mutate(data)
    found = validate(_model(data), ACCOUNTS, prefix="rule_set.")
    assert sorted(v.field for v in found) == sorted(
        "rule_set." + path for name, _, path, _ in CASES if name in chosen)


def test_compile_refuses_an_invalid_rule_set_with_every_problem():
    data = copy.deepcopy(BASE)
    data["rules"][1]["shares"][0]["receiver"]["account_ref"] = "NOPE"
    data["rules"][0]["priority"] = 2
    with pytest.raises(InvalidArgument) as err:
        plans.compile_plan(_model(data), ACCOUNTS, prefix="rule_set.")
    assert err.value.reason == "RULE_SET_INVALID"
    assert {v.field for v in err.value.violations} == {
        "rule_set.rules[1].shares[0].receiver.account_ref", "rule_set.rules[1].priority"}


# ---- overlapping priorities: exclusive conditions are allowed ---------------------------------

def _two(cond_a: dict, cond_b: dict, **extra_b) -> list:
    rules = []
    for name, cond, extra in (("a", cond_a, {}), ("b", cond_b, extra_b)):
        rules.append({"rule_name": name, "priority": 1, "condition": cond, **extra,
                      "shares": [_share("p", 10000, ref="PLAT_001")]})
    data = {"name": "pair", "currency_code": "CNY", "rules": rules,
            "attributes": [{"key": "tier"}, {"key": "region"}]}
    return [v.field for v in validate(_model(data), ACCOUNTS)]


def _eq(key, *values, comparison="ATTRIBUTE_COMPARISON_IN"):
    return {"key": key, "comparison": comparison, "values": list(values)}


@pytest.mark.parametrize("a,b,overlap", [
    ({}, {}, True),
    ({"tags_any": ["x"]}, {"tags_none": ["x"]}, False),
    ({"tags_all": ["x", "y"]}, {"tags_none": ["y"]}, False),
    ({"tags_any": ["x"]}, {"tags_any": ["y"]}, True),  # an order may carry both
    ({"tags_any": ["x", "y"]}, {"tags_none": ["x"]}, True),  # y alone satisfies both
    ({"min_amount_minor": 100}, {"max_amount_minor": 100}, False),
    ({"min_amount_minor": 100}, {"max_amount_minor": 101}, True),
    ({"channels": ["ALIPAY"]}, {"channels": ["WECHAT_PAY"]}, False),
    ({"channels": ["ALIPAY"]}, {"channels": ["ALIPAY", "UNIONPAY"]}, True),
    ({"attributes": [_eq("tier", "a")]}, {"attributes": [_eq("tier", "b")]}, False),
    ({"attributes": [_eq("tier", "a", "b")]}, {"attributes": [_eq("tier", "b", "c")]}, True),
    ({"attributes": [_eq("tier", "a")]},
     {"attributes": [_eq("tier", "a", comparison="ATTRIBUTE_COMPARISON_NOT_IN")]}, False),
    ({"attributes": [_eq("tier", "a", comparison="ATTRIBUTE_COMPARISON_NOT_EQUALS")]},
     {"attributes": [_eq("tier", "b", comparison="ATTRIBUTE_COMPARISON_NOT_IN")]}, True),
    ({"attributes": [_eq("tier", "a")]}, {"attributes": [_eq("region", "north")]}, True),
])
def test_equal_priorities_overlap_exactly_when_one_order_can_match_both(a, b, overlap):
    assert (_two(a, b) == ["rules[1].priority"]) is overlap


def test_equal_priorities_with_disjoint_windows_do_not_overlap():
    first = {"end_time": "2026-06-01T00:00:00Z"}
    assert _two({}, {}, start_time="2026-06-01T00:00:00Z") == ["rules[1].priority"]
    data = {"name": "w", "currency_code": "CNY", "rules": [
        {"rule_name": "a", "priority": 1, **first, "shares": [_share("p", 10000, ref="ACC_1")]},
        {"rule_name": "b", "priority": 1, "start_time": "2026-06-01T00:00:00Z",
         "shares": [_share("p", 10000, ref="ACC_1")]}]}
    assert validate(_model(data), ACCOUNTS) == []


# ---- chains of sub-rule-sets ----------------------------------------------------------------

def _level(name: str, next_name: str | None, version: int = 1):
    last = ({"rule_set": {"rule_set_name": next_name}} if next_name
            else {"account_ref": "SUP_2025001"})
    return _model({"name": name, "version": version, "currency_code": "CNY", "rules": [
        {"rule_name": "keep", "priority": 1, "shares": [
            _share("keep", 1000, ref=f"ACC_{int(name[1:]) % 40}"),
            {"label": "rest", "type": "SHARE_TYPE_REMAINDER", "receiver": last}]}]})


def _chain(levels_count: int):
    """l1 -> l2 -> ... -> l<levels_count>; returns (root, resolver)."""
    sets = {f"l{i}": _level(f"l{i}", f"l{i + 1}" if i < levels_count else None)
            for i in range(1, levels_count + 1)}
    return sets["l1"], lambda name, version: sets.get(name)


def test_a_10_level_chain_compiles_and_splits_to_the_last_level():
    from clearing.rules.evaluate import evaluate
    from tests.unit.rules.helpers import order
    root, resolver = _chain(LEVELS_MAX)
    assert validate(root, ACCOUNTS, resolver) == []
    plan = plans.compile_plan(root, ACCOUNTS, resolver)
    assert plan.level_count == 10 and len(plan.units) == 10
    ev = evaluate(plan, order(10**12), {}, accounts=ACCOUNTS)
    assert [leg.level for leg in ev.legs] == list(range(1, 11)) + [10]
    assert sum(leg.amount_minor for leg in ev.legs) == 10**12
    assert ev.legs[-1].external_ref == "SUP_2025001"
    assert ev.legs[-1].amount_minor == 10**12 * 9**10 // 10**10
    assert [m.parent_match_index for m in ev.matched_rules] == [-1] + list(range(9))


def test_an_11_level_chain_is_rejected_on_the_root_field():
    root, resolver = _chain(LEVELS_MAX + 1)
    problems = validate(root, ACCOUNTS, resolver)
    assert [v.field for v in problems] == ["rules[0].shares[1].receiver.rule_set"]
    assert "11 levels" in problems[0].description
    assert "l1 -> l2 -> l3 -> l4 -> l5 -> l6 -> l7 -> l8 -> l9 -> l10 -> l11" in \
        problems[0].description
    with pytest.raises(InvalidArgument):
        plans.compile_plan(root, ACCOUNTS, resolver)


def test_a_cycle_is_rejected_with_its_path():
    a, b = _level("l1", "l2"), _level("l2", "l3")
    c = _level("l3", "l1")
    sets = {"l1": a, "l2": b, "l3": c}
    problems = validate(a, ACCOUNTS, lambda name, version: sets.get(name))
    assert [(v.field, v.description) for v in problems] == [
        ("rules[0].shares[1].receiver.rule_set", "cycle: l1 -> l2 -> l3 -> l1")]
    selfish = _level("l4", "l4")
    assert [v.description for v in validate(selfish, ACCOUNTS, lambda n, v: selfish)] == [
        "cycle: l4 -> l4"]


def test_a_cycle_below_the_root_is_reported_on_the_root_field():
    sets = {"l1": _level("l1", "l2"), "l2": _level("l2", "l3"), "l3": _level("l3", "l2")}
    problems = validate(sets["l1"], ACCOUNTS, lambda name, version: sets.get(name))
    assert [(v.field, v.description) for v in problems] == [
        ("rules[0].shares[1].receiver.rule_set", "cycle: l2 -> l3 -> l2")]


def test_sub_rule_set_in_another_currency_or_defining_a_counter_differently():
    sub = _model({"name": "l2", "version": 1, "currency_code": "USD", "rules": [
        {"rule_name": "all", "priority": 1, "shares": [_share("p", 10000, ref="USD_ACC")]}]})
    problems = validate(_level("l1", "l2"), ACCOUNTS, lambda name, version: sub)
    assert [(v.field, v.description) for v in problems] == [
        ("rules[0].shares[1].receiver.rule_set", "rule set 'l2' splits USD, not CNY")]
    data = copy.deepcopy(BASE)
    data["rules"][1]["shares"][2]["receiver"] = {"rule_set": {"rule_set_name": "l2"}}
    other = copy.deepcopy(BASE)
    other["name"] = "l2"
    other["counters"][0]["period"] = "COUNTER_PERIOD_DAY"
    other["rules"][1]["shares"][0]["receiver"]["account_ref"] = "ACC_7"
    problems = validate(_model(data), ACCOUNTS, lambda name, version: _model(other))
    assert [(v.field, v.description) for v in problems] == [
        ("rules[1].shares[2].receiver.rule_set",
         "rule set 'l2' defines counter 'merchant_orders' differently")]


def test_compile_reports_unknown_accounts_of_sub_rule_sets():
    sub = _model({"name": "l2", "version": 1, "currency_code": "CNY", "rules": [
        {"rule_name": "all", "priority": 1, "shares": [_share("p", 10000, ref="GONE")]}]})
    with pytest.raises(InvalidArgument) as err:
        plans.compile_plan(_level("l1", "l2"), ACCOUNTS, lambda name, version: sub)
    assert [(v.field, v.description) for v in err.value.violations] == [
        ("rules[0].shares[1].receiver.rule_set", "sub-rule-set 'l2' names unknown account "
                                                 "'GONE'")]
    assert plans.needed_account_refs(_level("l1", "l2"), lambda n, v: sub) == {"ACC_1", "GONE"}


# ---- YAML and proto input errors --------------------------------------------------------------

@pytest.mark.parametrize("text,path,fragment", [
    ("name: x\nrules:\n  - sharez: []\n", "rules[0].sharez", "no field 'sharez'"),
    ("rules:\n  - shares:\n      - type: SHARE_TYPE_PERCENT\n", "rules[0].shares[0].type",
     "SHARE_TYPE_PERCENT"),
    ("rules:\n  - shares:\n      - {}\n      - ratio_bps: lots\n",
     "rules[0].shares[1].ratio_bps", "lots"),
    ("rules:\n  - start_time: yesterday\n", "rules[0].start_time", "timestamp"),
    ("rules:\n  - shares:\n      - receiver: {account_ref: A, party_role: b}\n",
     "rules[0].shares[0].receiver", "oneof"),
    ("rules: [\n", "rule_set", "not valid YAML at line"),
    ("- just\n- a list\n", "rule_set", "mapping of RuleSet fields"),
    ("rules:\n  - top_slice: yes\n", "rules[0].top_slice", "true or false"),
])
def test_yaml_errors_carry_a_field_path(text, path, fragment):
    with pytest.raises(InvalidArgument) as err:
        proto.rule_set_from_yaml(text)
    (violation,) = err.value.violations
    assert violation.field == path
    assert fragment in violation.description


def test_yaml_accepts_json_names_and_keeps_on_as_a_string():
    rs = rule_set("""
    name: x
    currencyCode: CNY
    rules:
      - ruleName: r
        priority: 1
        condition: {tagsAny: [on, no]}
        shares: [{label: p, type: SHARE_TYPE_RATIO, ratioBps: 10000,
                  receiver: {accountRef: ACC_1}}]
    """)
    assert rs.currency_code == "CNY" and rs.rules[0].shares[0].ratio_bps == 10000
    assert rs.rules[0].condition.tags_any == ("on", "no")


def test_unknown_enum_numbers_from_the_wire_are_invalid_arguments():
    msg = json_format.ParseDict(BASE, rule_set_pb2.RuleSet())
    msg.rules[1].shares[0].type = 42
    msg.counters[0].period = 9
    with pytest.raises(InvalidArgument) as err:
        proto.rule_set_from_proto(msg, prefix="rule_set.")
    assert [v.field for v in err.value.violations] == [
        "rule_set.rules[1].shares[0].type", "rule_set.counters[0].period"]


def test_a_rule_set_over_1_mib_is_refused():
    msg = json_format.ParseDict(BASE, rule_set_pb2.RuleSet())
    msg.description = "x" * (1 << 20)
    with pytest.raises(InvalidArgument) as err:
        proto.rule_set_from_proto(msg)
    assert err.value.violations[0].field == "rule_set"
