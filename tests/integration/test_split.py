"""Split and GetSplit through the generated stubs: the worked examples booked in the ledger
to the exact minor unit, holds, a frozen receiver, idempotency, an order split once,
counters reserved and undone, invalid orders."""

from __future__ import annotations

import asyncpg
import grpc
import pytest

from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import split_pb2 as pb
from tests.integration.test_split_preview import CASES
from tests.split_support import Splits, file_examples, new_key, order
from tests.support import Client, details, rid

MKT_FUNDING_MINOR = 1_000_000
SUBSIDIES_MINOR = 2_000 + 1_500  # the two platform-funded coupon cases of CASES


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    return await file_examples(channel, client, database_url, platform.platform_id)


async def _posted(client: Client, account_id: int) -> int:
    return (await client.balance(account_id)).posted_minor


async def test_worked_examples_are_booked_to_the_minor_unit(world, client: Client):
    splits, ids = world
    await client.transfer(ids["CUSTODIAL"], ids["MKT"], MKT_FUNDING_MINOR)
    expected: dict[str, int] = {}
    net_total = 0
    for name, fields, credits in CASES:
        split = await splits.split(order(rule_set_name=name, **fields))
        assert split.status == pb.SPLIT_STATUS_POSTED and split.split_id > 0
        assert all(len(leg.transfer_ids) == 1 for leg in split.legs)
        net_total += split.net_amount_minor
        for ref, amount in credits.items():
            if ref != "CUSTODIAL":
                expected[ref] = expected.get(ref, 0) + amount
    for ref, amount in expected.items():
        assert await _posted(client, ids[ref]) == amount, ref
    assert await _posted(client, ids["MKT"]) == MKT_FUNDING_MINOR - SUBSIDIES_MINOR
    assert await _posted(client, ids["CUSTODIAL"]) == -net_total - MKT_FUNDING_MINOR
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_split_answers_what_get_split_reads(world, client: Client):
    splits, ids = world
    o = order(85_000_000, rule_set_name="b2b", tags=["government purchase"],
              attributes={"customer_type": "enterprise"})
    split = await splits.split(o)
    by_order = (await splits.call("GetSplit", pb.GetSplitRequest(order_id=o.order_id))).split
    by_id = (await splits.call("GetSplit", pb.GetSplitRequest(split_id=split.split_id))).split
    assert by_order == by_id == split
    assert [leg.amount_minor for leg in split.legs] == [1_700_000, 8_330_000, 62_475_000,
                                                        12_495_000]
    assert (split.rule_set_name, split.rule_set_version, split.order.order_id) == (
        "b2b", 1, o.order_id)
    assert split.order.HasField("paid_time") and split.HasField("create_time")
    assert [(a.kind, len(a.leg_changes)) for a in split.actions] == [
        (pb.SPLIT_ACTION_KIND_SPLIT, 4)]
    transfer_id = split.legs[0].transfer_ids[0]
    entries = await client.call("ListEntries", lpb.ListEntriesRequest(
        account_id=ids["GOV_ACCOUNT"]))
    assert [(e.transfer_id, e.amount_minor) for e in entries.entries] == [
        (transfer_id, 1_700_000)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await splits.call("GetSplit", pb.GetSplitRequest(order_id="never-split"))
    assert (err.value.code(), details(err.value)[0]) == (grpc.StatusCode.NOT_FOUND,
                                                         "SPLIT_NOT_FOUND")


async def test_another_platform_cannot_read_the_split(world, channel, database_url):
    splits, _ = world
    split = await splits.split(order(10_000, rule_set_name="baby"))
    conn = await asyncpg.connect(database_url)
    try:
        from clearing.tenancy import create_platform
        _, key = await create_platform(conn, f"other_{rid()[:8]}", frozenset({"gateway"}))
    finally:
        await conn.close()
    other = Splits(channel, key)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await other.call("GetSplit", pb.GetSplitRequest(split_id=split.split_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_held_legs_are_pending_transfers(world, client: Client):
    splits, ids = world
    split = await splits.split(order(1_113, rule_set_name="held"))
    assert split.status == pb.SPLIT_STATUS_HOLDING
    assert (split.held_minor, split.released_minor) == (1_002, 111)
    supplier = split.legs[1]
    assert (supplier.release_state, supplier.hold_reason) == (
        pb.RELEASE_STATE_HELD, pb.HOLD_REASON_RELEASE_POLICY)
    balance = await client.balance(ids["SUP_2025001"])
    assert (balance.posted_minor, balance.pending_credit_minor) == (0, 1_002)
    assert await _posted(client, ids["PLAT_001"]) == 111
    custodial = await client.balance(ids["CUSTODIAL"])
    assert (custodial.posted_minor, custodial.pending_debit_minor) == (-111, 1_002)
    pending = (await client.call("ListEntries", lpb.ListEntriesRequest(
        account_id=ids["SUP_2025001"]))).entries[0]
    assert (pending.transfer_id, pending.mode) == (supplier.transfer_ids[0],
                                                   lpb.TRANSFER_MODE_PENDING)
    assert (await client.verify()).ok


async def test_frozen_receiver_share_held_and_alert_recorded(world, client: Client,
                                                             database_url, platform):
    splits, ids = world
    o = order(10_000, rule_set_name="frozen", parties={"merchant": "M_FROZEN"})
    split = await splits.split(o)
    merchant = split.legs[1]
    assert (merchant.amount_minor, merchant.held_minor, merchant.hold_reason) == (
        9_000, 9_000, pb.HOLD_REASON_RECEIVER_UNAVAILABLE)
    assert list(merchant.transfer_ids) == []  # waits in the custodial account
    assert split.status == pb.SPLIT_STATUS_HOLDING
    assert [(a.reason, a.account_id) for a in split.alerts] == [
        ("RECEIVER_FROZEN", ids["M_FROZEN"])]
    frozen = await client.balance(ids["M_FROZEN"])
    assert (frozen.posted_minor, frozen.pending_credit_minor) == (0, 0)
    assert await _posted(client, ids["PLAT_001"]) == 1_000
    assert await _posted(client, ids["CUSTODIAL"]) == -1_000
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT reason, account_id, split_id FROM split_alerts"
                                " WHERE platform_id = $1", platform.platform_id)
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [("RECEIVER_FROZEN", ids["M_FROZEN"], split.split_id)]
    again = (await splits.call("GetSplit", pb.GetSplitRequest(order_id=o.order_id))).split
    assert again.legs[1].held_minor == 9_000 and again.alerts == split.alerts


async def test_replay_returns_the_first_split_and_posts_nothing_more(world, client: Client):
    splits, ids = world
    request_id, o = rid(), order(100_000, rule_set_name="baby")
    first = await splits.split(o, request_id=request_id)
    again = await splits.split(o, request_id=request_id)
    assert again == first
    assert await _posted(client, ids["SUP_2025001"]) == 75_000
    changed = pb.Order()
    changed.CopyFrom(o)
    changed.amount_minor = 100_001
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await splits.split(changed, request_id=request_id)
    assert (err.value.code(), details(err.value)[0]) == (grpc.StatusCode.ALREADY_EXISTS,
                                                         "REQUEST_ID_REUSED")


async def test_an_order_is_split_once(world, client: Client):
    splits, ids = world
    o = order(100_000, rule_set_name="baby")
    await splits.split(o)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await splits.split(o)
    assert (err.value.code(), details(err.value)[0]) == (grpc.StatusCode.ALREADY_EXISTS,
                                                         "ORDER_ALREADY_SPLIT")
    assert await _posted(client, ids["SUP_2025001"]) == 75_000
    assert (await client.verify()).ok


async def test_counters_count_committed_splits_only(world):
    splits, _ = world
    values = []
    for _ in range(2):
        split = await splits.split(order(100_000, rule_set_name="supplier-tiers"))
        values.append([(c.value, c.source) for c in split.counter_values])
    o = order(100_000, rule_set_name="supplier-tiers")
    await splits.split(o)
    with pytest.raises(grpc.aio.AioRpcError):
        await splits.split(o)  # refused: its reservation is undone
    fourth = await splits.split(order(100_000, rule_set_name="supplier-tiers"))
    assert values == [[(1, pb.COUNTER_SOURCE_LIVE)], [(2, pb.COUNTER_SOURCE_LIVE)]]
    assert [c.value for c in fourth.counter_values] == [4]


async def test_invalid_orders_answer_field_paths(world):
    splits, _ = world
    cases = [
        (pb.SplitRequest(request_id=rid(), order=order(0, rule_set_name="baby")),
         ["order.amount_minor"]),
        (pb.SplitRequest(request_id=rid(), order=order(100, order_id="", channel_fee_minor=0,
                                                       currency_code="")),
         ["order.order_id", "order.currency_code"]),
        (pb.SplitRequest(order=order(100, rule_set_name="baby",
                                     coupons=[pb.Coupon(amount_minor=-1)])),
         ["request_id", "order.coupons[0].amount_minor", "order.coupons[0].funding"]),
        (pb.SplitRequest(request_id=rid(), order=order(100, channel_fee_minor=101)),
         ["order.channel_fee_minor"]),
    ]
    for request, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await splits.call("Split", request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(err.value)[1] == fields, request
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await splits.split(order(100, rule_set_name="takeaway"))
    assert details(err.value) == ("INVALID_ORDER", ["order.parties[merchant]"])


async def test_only_gateways_split(world, channel, database_url, platform):
    operator = Splits(channel, await new_key(database_url, platform.platform_id, {"operator"}))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await operator.split(order(100, rule_set_name="baby"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_no_custodial_account_fails_cleanly(channel, client: Client, database_url,
                                                  platform):
    await client.open("PLAT_001", kind=lpb.ACCOUNT_KIND_PLATFORM)
    maker = Splits(channel, client.metadata[0][1].split(" ", 1)[1])
    checker = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    published = await maker.publish("""
        name: default
        currency_code: CNY
        rules:
          - rule_name: all
            priority: 1
            shares: [{label: p, type: SHARE_TYPE_RATIO, ratio_bps: 10000,
                      receiver: {account_ref: PLAT_001}}]
        """)
    await checker.activate("default", published.version)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await maker.split(order(100))
    assert (err.value.code(), details(err.value)[0]) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                         "CUSTODIAL_ACCOUNT_MISSING")


async def test_splits_use_the_newly_activated_version(world, channel, database_url, platform):
    splits, _ = world
    checker = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    baby = (await splits.call("GetRuleSet", pb.GetRuleSetRequest(rule_set_name="baby"))).rule_set
    baby.rules[0].shares[0].ratio_bps, baby.rules[0].shares[1].ratio_bps = 2000, 7000
    v2 = (await splits.call("PublishRuleSet", pb.PublishRuleSetRequest(
        request_id=rid(), rule_set=baby))).rule_set
    before = await splits.split(order(100_000, rule_set_name="baby"))
    # PLAT_001's share of the order split so far moves 15% -> 20% (33%, over the 30%
    # ratio-swing threshold): a second approver activates it
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await checker.activate("baby", v2.version, content_sha256=v2.content_sha256)
    assert details(err.value)[0] == "RATIO_SWING_NEEDS_SECOND_APPROVER"
    second = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    await second.activate("baby", v2.version, content_sha256=v2.content_sha256)
    after = await splits.split(order(100_000, rule_set_name="baby"))
    assert (before.rule_set_version, [leg.amount_minor for leg in before.legs]) == (
        1, [15_000, 75_000, 10_000])
    assert (after.rule_set_version, [leg.amount_minor for leg in after.legs]) == (
        2, [20_000, 70_000, 10_000])


async def test_multi_level_split_records_both_levels(world, client: Client):
    splits, ids = world
    levels = (await splits.call("GetRuleSet", pb.GetRuleSetRequest(
        rule_set_name="platform"))).rule_set
    assert levels.level_count == 2
    split = await splits.split(order(100_000, rule_set_name="platform"))
    assert [(leg.external_ref, leg.level, leg.rule_set_name) for leg in split.legs] == [
        ("PLAT_001", 1, "platform"), ("DIST_01", 2, "supplier-own"),
        ("SUP_2025001", 2, "supplier-own")]
    assert [(m.rule_name, m.parent_match_index) for m in split.matched_rules] == [
        ("platform-cut", -1), ("distributor-cut", 0)]
    assert await _posted(client, ids["DIST_01"]) == 9_000
