"""RiskService and the risk check on the split path, through the generated stubs against
the real server, PostgreSQL and Redis. Amounts worked by hand: rule sets `to-m` and `to-a`
give PLAT_001 a fixed 1,000 and the merchant (M_10086, ACC_1) the remainder, so an order of
A gives the merchant A - 1,000."""

from __future__ import annotations

import json

import asyncpg
import grpc
import pytest

from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import risk_pb2 as rpb
from clearing.v1 import split_pb2 as pb
from tests.risk_support import World, limits, make_world
from tests.split_support import order
from tests.support import Client, details, rid


@pytest.fixture
async def world(channel, client: Client, database_url, platform) -> World:
    return await make_world(channel, client, database_url, platform.platform_id)


async def _refused(coro) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    reason, fields = details(err.value)
    return err.value.code(), reason, fields


async def _balance(w: World, ref: str) -> tuple[int, int]:
    b = await w.client.balance(w.ids[ref])
    return b.posted_minor, b.pending_credit_minor


def _merchant_leg(split: pb.Split) -> pb.SplitLeg:
    return next(leg for leg in split.legs if leg.external_ref == "M_10086")


# ---- the policy: filing, maker-checker, validation ----------------------------------------

async def test_activation_is_maker_checker(world: World, channel, database_url, platform):
    from tests.risk_support import Risk
    from tests.split_support import new_key

    both = Risk(channel, await new_key(database_url, platform.platform_id,
                                       {"operator", "approver"}))
    published = await both.publish(limits=[limits(large_split_minor=50_000)])
    assert published.version == 1 and not published.active
    assert published.swing_threshold_bps == 3000  # the default 30%
    code, reason, _ = await _refused(both.call("ActivateRiskPolicy", rpb.ActivateRiskPolicyRequest(
        request_id=rid(), version=1)))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "MAKER_CHECKER")
    code, reason, _ = await _refused(world.operator.call(
        "ActivateRiskPolicy", rpb.ActivateRiskPolicyRequest(request_id=rid(), version=1)))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
    code, reason, _ = await _refused(world.operator.call(
        "GetRiskPolicy", rpb.GetRiskPolicyRequest()))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "RISK_POLICY_NOT_FOUND")
    done = await world.approver_a.call("ActivateRiskPolicy", rpb.ActivateRiskPolicyRequest(
        request_id=rid(), version=1))
    assert done.policy.active and done.previous_version == 0
    got = (await world.operator.call("GetRiskPolicy", rpb.GetRiskPolicyRequest())).policy
    assert got.version == 1 and got.limits[0].large_split_minor == 50_000
    code, reason, _ = await _refused(world.approver_a.call(
        "ActivateRiskPolicy", rpb.ActivateRiskPolicyRequest(request_id=rid(), version=7)))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "RISK_POLICY_NOT_FOUND")


@pytest.mark.parametrize("policy, field", [
    ({}, "policy.limits"),
    ({"limits": [rpb.RiskCurrencyLimits(currency_code="cny", large_split_minor=1)]},
     "policy.limits[0].currency_code"),
    ({"limits": [limits(large_split_minor=-1)]}, "policy.limits[0].large_split_minor"),
    ({"limits": [limits(frequency_amount_minor=10)], "frequency_window_s": 60},
     "policy.frequency_count_max"),
    ({"limits": [limits(frequency_amount_minor=10)], "frequency_count_max": 3,
      "frequency_window_s": 59}, "policy.frequency_window_s"),
    ({"limits": [limits(large_split_minor=1)], "swing_threshold_bps": 10_001},
     "policy.swing_threshold_bps"),
    ({"limits": [limits(large_split_minor=1)], "action": 9}, "policy.action"),
])
async def test_invalid_policy_names_the_field(world: World, policy, field):
    policy.setdefault("action", rpb.RISK_ACTION_HOLD_SHARE)
    code, reason, fields = await _refused(world.operator.call(
        "PublishRiskPolicy", rpb.PublishRiskPolicyRequest(request_id=rid(),
                                                          policy=rpb.RiskPolicy(**policy))))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert field in fields


async def test_invalid_resolve_and_list_name_the_field(world: World):
    code, _, fields = await _refused(world.approver_a.call(
        "ResolveRiskEvent", rpb.ResolveRiskEventRequest(request_id=rid(), event_id=1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(fields) == {"decision", "note"}
    code, _, fields = await _refused(world.approver_a.call(
        "ListRiskEvents", rpb.ListRiskEventsRequest(page_token="garbage")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["page_token"]
    code, reason, _ = await _refused(world.approver_a.call(
        "GetRiskEvent", rpb.GetRiskEventRequest(event_id=123456789)))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "RISK_EVENT_NOT_FOUND")


# ---- hits on the split path ---------------------------------------------------------------

async def test_large_split_at_the_threshold_passes_one_unit_above_is_held(world: World):
    await world.file_policy(limits=[limits(large_split_minor=50_000)])
    at = await world.splits.split(order(51_000, rule_set_name="to-m"))  # merchant 50,000
    assert _merchant_leg(at).held_minor == 0 and at.status == pb.SPLIT_STATUS_POSTED
    above = await world.splits.split(order(51_001, rule_set_name="to-m"))  # merchant 50,001
    leg = _merchant_leg(above)
    assert (leg.amount_minor, leg.held_minor, leg.hold_reason) == (
        50_001, 50_001, pb.HOLD_REASON_RISK_REVIEW)
    assert above.status == pb.SPLIT_STATUS_HOLDING
    assert [a.reason for a in above.alerts] == ["RISK_HOLD"]
    # the split committed; the merchant's share waits as a pending credit, PLAT_001 is paid
    assert await _balance(world, "M_10086") == (50_000, 50_001)
    assert await _balance(world, "PLAT_001") == (2_000, 0)
    [event] = await world.approver_a.events()
    assert (event.rule, event.state, event.account_id, event.split_id, event.order_id) == (
        rpb.RISK_RULE_LARGE_SPLIT, rpb.RISK_EVENT_STATE_OPEN, world.ids["M_10086"],
        above.split_id, above.order.order_id)
    assert (event.amount_minor, event.held_minor, event.observed, event.limit) == (
        50_001, 50_001, 50_001, 50_000)
    assert json.loads(event.evidence_json)["policy_version"] == 1
    got = (await world.approver_a.call("GetRiskEvent", rpb.GetRiskEventRequest(
        event_id=event.event_id))).event
    assert [s.step for s in got.steps] == ["opened"]
    # the gateway cannot release or cancel what risk holds
    code, reason, _ = await _refused(world.splits.call("ReleaseSplit", pb.ReleaseSplitRequest(
        request_id=rid(), order_id=above.order.order_id, fraction_bps=10_000)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_DUE")
    code, reason, _ = await _refused(world.splits.call("CancelSplit", pb.CancelSplitRequest(
        request_id=rid(), order_id=above.order.order_id, reason="x")))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RISK_REVIEW_PENDING")
    assert (await world.client.verify()).ok


async def test_review_only_opens_an_event_and_pays(world: World):
    await world.file_policy(limits=[limits(large_split_minor=50_000)],
                            action=rpb.RISK_ACTION_REVIEW_ONLY)
    split = await world.splits.split(order(61_000, rule_set_name="to-m"))
    assert _merchant_leg(split).held_minor == 0
    assert await _balance(world, "M_10086") == (60_000, 0)
    [event] = await world.approver_a.events()
    assert (event.rule, event.held_minor) == (rpb.RISK_RULE_LARGE_SPLIT, 0)


async def test_frequency_counts_shares_above_the_amount_only(world: World):
    await world.file_policy(limits=[limits(frequency_amount_minor=10_000)],
                            frequency_count_max=2, frequency_window_s=3600)
    for _ in range(3):  # merchant 10,000: at the amount, not counted
        split = await world.splits.split(order(11_000, rule_set_name="to-m"))
        assert _merchant_leg(split).held_minor == 0
    held = []
    for _ in range(3):  # merchant 10,001: the third is the third above it: 3 > 2
        split = await world.splits.split(order(11_001, rule_set_name="to-m"))
        held.append(_merchant_leg(split).held_minor)
    assert held == [0, 0, 10_001]
    [event] = await world.approver_a.events()
    assert (event.rule, event.observed, event.limit) == (rpb.RISK_RULE_FREQUENCY, 3, 2)
    evidence = json.loads(event.evidence_json)
    assert evidence["frequency_count"] == 3 and len(evidence["frequency_orders"]) == 3
    assert event.order_id in evidence["frequency_orders"]
    # ACC_1 is another receiver: its count starts at 1 (PLAT_001's fixed 1,000 is not above)
    other = await world.splits.split(order(11_001, rule_set_name="to-a"))
    assert all(leg.held_minor == 0 for leg in other.legs)
    assert await _balance(world, "M_10086") == (3 * 10_000 + 2 * 10_001, 10_001)


async def test_daily_inflow_cap_exactly_then_one_unit_above(world: World):
    await world.file_policy(limits=[limits(daily_inflow_cap_minor=100_000)])
    for amount in (61_000, 41_000):  # merchant 60,000 + 40,000 = the cap exactly
        split = await world.splits.split(order(amount, rule_set_name="to-m"))
        assert _merchant_leg(split).held_minor == 0
    split = await world.splits.split(order(1_001, rule_set_name="to-m"))  # merchant 1
    assert _merchant_leg(split).held_minor == 1
    [event] = await world.approver_a.events()
    assert (event.rule, event.observed, event.limit, event.held_minor) == (
        rpb.RISK_RULE_DAILY_INFLOW, 100_001, 100_000, 1)
    assert await _balance(world, "M_10086") == (100_000, 1)


async def test_a_hit_is_decided_once_per_split_under_replays(world: World):
    await world.file_policy(limits=[limits(frequency_amount_minor=10_000)],
                            frequency_count_max=1, frequency_window_s=3600)
    first = await world.splits.split(order(11_001, rule_set_name="to-m"))
    assert _merchant_leg(first).held_minor == 0  # count 1, not above 1
    request_id = rid()
    o = order(11_001, rule_set_name="to-m")
    held = await world.splits.split(o, request_id=request_id)
    assert _merchant_leg(held).held_minor == 10_001  # count 2
    for _ in range(3):  # replays answer the first split; they count nothing more
        again = await world.splits.split(o, request_id=request_id)
        assert again == held
    # the same order under another request id is refused; it counts nothing either
    code, reason, _ = await _refused(world.splits.split(o))
    assert reason == "ORDER_ALREADY_SPLIT"
    events = await world.approver_a.events()
    assert len(events) == 1 and events[0].observed == 2
    third = await world.splits.split(order(11_001, rule_set_name="to-m"))
    assert _merchant_leg(third).held_minor == 10_001
    assert (await world.approver_a.events())[0].observed == 3
    assert await _balance(world, "M_10086") == (10_001, 20_002)


# ---- resolution: maker-checker, release, reject -------------------------------------------

async def _held_event(w: World) -> tuple[pb.Split, rpb.RiskEvent]:
    await w.file_policy(limits=[limits(large_split_minor=50_000)])
    split = await w.splits.split(order(51_001, rule_set_name="to-m"))
    [event] = await w.approver_a.events()
    return split, event


async def test_release_posts_the_hold_after_a_second_approver(world: World):
    split, event = await _held_event(world)
    proposed = await world.approver_a.resolve(event.event_id, rpb.RISK_DECISION_RELEASE)
    assert proposed.state == rpb.RISK_EVENT_STATE_RESOLUTION_PROPOSED
    code, reason, _ = await _refused(world.approver_a.resolve(event.event_id,
                                                              rpb.RISK_DECISION_RELEASE))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "MAKER_CHECKER")
    code, reason, _ = await _refused(world.operator.resolve(event.event_id,
                                                            rpb.RISK_DECISION_RELEASE))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
    code, reason, _ = await _refused(world.approver_b.resolve(event.event_id,
                                                              rpb.RISK_DECISION_REJECT))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RISK_EVENT_NOT_OPEN")
    assert await _balance(world, "M_10086") == (0, 50_001)  # nothing moved yet
    request_id = rid()
    done = await world.approver_b.resolve(event.event_id, rpb.RISK_DECISION_RELEASE,
                                          request_id=request_id, note="known customer")
    assert done.state == rpb.RISK_EVENT_STATE_RELEASED
    assert [(s.step, s.note) for s in done.steps] == [
        ("opened", ""), ("proposed", "checked"), ("released", "known customer")]
    assert await _balance(world, "M_10086") == (50_001, 0)
    again = await world.approver_b.resolve(event.event_id, rpb.RISK_DECISION_RELEASE,
                                           request_id=request_id, note="known customer")
    assert again == done  # a replay: nothing moves twice
    assert await _balance(world, "M_10086") == (50_001, 0)
    code, reason, _ = await _refused(world.approver_b.resolve(event.event_id,
                                                              rpb.RISK_DECISION_RELEASE))
    assert reason == "RISK_EVENT_NOT_OPEN"
    got = (await world.splits.call("GetSplit", pb.GetSplitRequest(
        order_id=split.order.order_id))).split
    leg = _merchant_leg(got)
    assert (leg.held_minor, leg.released_minor) == (0, 50_001)
    assert got.status == pb.SPLIT_STATUS_POSTED
    assert (await world.client.verify()).ok


async def test_reject_moves_the_share_to_the_risk_suspense_account(world: World, database_url):
    split, event = await _held_event(world)
    await world.operator.resolve(event.event_id, rpb.RISK_DECISION_REJECT)  # an operator proposes
    done = await world.approver_b.resolve(event.event_id, rpb.RISK_DECISION_REJECT,
                                          note="mule account")
    assert done.state == rpb.RISK_EVENT_STATE_REJECTED
    assert await _balance(world, "M_10086") == (0, 0)
    suspense = (await world.client.call("GetAccount", lpb.GetAccountRequest(
        external_ref="risk:suspense:CNY"))).account
    assert suspense.kind == lpb.ACCOUNT_KIND_SUSPENSE
    assert (await world.client.balance(suspense.account_id)).posted_minor == 50_001
    got = (await world.splits.call("GetSplit", pb.GetSplitRequest(
        order_id=split.order.order_id))).split
    leg = _merchant_leg(got)
    assert (leg.held_minor, leg.voided_minor, leg.released_minor) == (0, 50_001, 0)
    assert (await world.client.verify()).ok
    # nothing deleted: the event and its steps stay
    conn = await asyncpg.connect(database_url)
    try:
        steps = await conn.fetch("SELECT step FROM risk_event_steps WHERE event_id = $1"
                                 " ORDER BY at", event.event_id)
    finally:
        await conn.close()
    assert [s["step"] for s in steps] == ["opened", "proposed", "rejected"]


async def test_list_filters_and_pages(world: World):
    await world.file_policy(limits=[limits(large_split_minor=50_000)])
    for _ in range(3):
        await world.splits.split(order(51_001, rule_set_name="to-m"))
    await world.splits.split(order(51_001, rule_set_name="to-a"))
    everything = await world.approver_a.events()
    assert len(everything) == 4
    assert [e.event_id for e in everything] == sorted((e.event_id for e in everything),
                                                      reverse=True)
    only_a = await world.approver_a.events(account_id=world.ids["ACC_1"])
    assert [e.account_id for e in only_a] == [world.ids["ACC_1"]]
    seen, token = [], ""
    while True:
        page = await world.approver_a.call("ListRiskEvents", rpb.ListRiskEventsRequest(
            page_size=3, page_token=token, account_id=world.ids["M_10086"]))
        seen += [e.event_id for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 3 == len(set(seen))
    assert await world.approver_a.events(state=rpb.RISK_EVENT_STATE_RELEASED) == []
    assert len(await world.approver_a.events(rule=rpb.RISK_RULE_LARGE_SPLIT)) == 4


async def test_a_batch_counts_each_order_once_and_replays_decide_nothing_new(world: World):
    await world.file_policy(limits=[limits(frequency_amount_minor=10_000)],
                            frequency_count_max=2, frequency_window_s=3600)
    requests = [pb.SplitRequest(request_id=rid(), order=order(11_001, rule_set_name="to-m"))
                for _ in range(4)]
    batch = pb.SplitBatchRequest(request_id=rid(), requests=requests)
    first = await world.splits.call("SplitBatch", batch)
    held = sorted(_merchant_leg(o.split).held_minor for o in first.outcomes)
    assert held == [0, 0, 10_001, 10_001]  # counts 1..4, each order once: 3 and 4 > 2
    again = await world.splits.call("SplitBatch", batch)
    assert again == first
    # the same orders in a new batch under their own request ids: their first responses
    replay = await world.splits.call("SplitBatch", pb.SplitBatchRequest(
        request_id=rid(), requests=requests))
    assert [o.split for o in replay.outcomes] == [o.split for o in first.outcomes]
    events = await world.approver_a.events()
    assert sorted(e.observed for e in events) == [3, 4]
    assert await _balance(world, "M_10086") == (20_002, 20_002)


async def test_a_refused_release_can_be_confirmed_again_later(world: World):
    _, event = await _held_event(world)
    await world.approver_a.resolve(event.event_id, rpb.RISK_DECISION_RELEASE)
    merchant = world.ids["M_10086"]
    await world.client.call("FreezeAccount", lpb.FreezeAccountRequest(
        request_id=rid(), account_id=merchant, reason="investigation"))
    code, reason, _ = await _refused(world.approver_b.resolve(event.event_id,
                                                              rpb.RISK_DECISION_RELEASE))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and reason == "ACCOUNT_FROZEN"
    assert await _balance(world, "M_10086") == (0, 50_001)
    await world.client.call("UnfreezeAccount", lpb.UnfreezeAccountRequest(
        request_id=rid(), account_id=merchant, reason="cleared"))
    done = await world.approver_b.resolve(event.event_id, rpb.RISK_DECISION_RELEASE)
    assert done.state == rpb.RISK_EVENT_STATE_RELEASED
    assert await _balance(world, "M_10086") == (50_001, 0)
