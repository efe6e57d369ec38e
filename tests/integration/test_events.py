"""EventService's feed: every kind of change writes its event in its transaction (a
refused change writes none), numbered per platform without gaps; WatchEvents replays then
follows live, filters, ends a stream that falls too far behind with the cursor to resume
from, and works across server processes; tenancy."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import grpc
import pytest

from clearing import server
from clearing.v1 import event_pb2 as pb
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import split_pb2 as spb
from tests.conftest import server_settings
from tests.events_support import Events, held_world, wait_events
from tests.split_support import order
from tests.support import Client, ServerProcess, details, rid


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    return await held_world(channel, client, database_url, platform.platform_id)


@pytest.fixture
def events(channel, platform) -> Events:
    return Events(channel, platform.key)


async def _refused(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    return err.value.code(), details(err.value)[0]


async def test_each_change_writes_its_event_and_a_refused_one_none(world, events: Events):
    setup = await wait_events(events, 2)
    assert [e.type for e in setup] == ["rule_set.published", "rule_set.activated"]
    assert setup[1].rule_set.name == "held" and setup[1].resource_id == "held/1"

    split = await world.splits.split(order(1_114, rule_set_name="held"), request_id="s-1")
    await world.splits.call("ReleaseSplit", spb.ReleaseSplitRequest(
        request_id="r-1", order_id=split.order_id, event_name="SHIPPED"))
    await world.splits.call("CancelSplit", spb.CancelSplitRequest(
        request_id="c-1", order_id=split.order_id, reason="order cancelled"))
    sup = world.ids["SUP_2025001"]
    await world.client.call("FreezeAccount", lpb.FreezeAccountRequest(
        request_id=rid(), account_id=sup, reason="kyc"))
    # refused changes: no event
    assert (await _refused(world.client.call("FreezeAccount", lpb.FreezeAccountRequest(
        request_id=rid(), account_id=sup, reason="again"))))[0] == \
        grpc.StatusCode.FAILED_PRECONDITION
    assert (await _refused(world.splits.split(order(1_114, rule_set_name="held",
                                                    order_id=split.order_id))))[0] == \
        grpc.StatusCode.ALREADY_EXISTS
    await world.client.call("UnfreezeAccount", lpb.UnfreezeAccountRequest(
        request_id=rid(), account_id=sup, reason="ok"))

    await wait_events(events, 5, cursor=2)
    await asyncio.sleep(0.2)  # nothing more comes (the refused calls wrote nothing)
    got = await events.all(2)
    assert [(e.seq, e.type) for e in got] == [
        (3, "split.held"), (4, "split.released"), (5, "split.cancelled"),
        (6, "account.frozen"), (7, "account.unfrozen")]
    held, released, cancelled, frozen, unfrozen = got
    assert held.resource_id == str(split.split_id) and held.request_id == "s-1"
    assert held.split.split_id == split.split_id and held.split.status == spb.SPLIT_STATUS_HOLDING
    assert held.split == split  # the event's payload is the split's first response
    assert released.request_id == "r-1" and released.split.legs[1].released_minor == 501
    assert cancelled.split.status == spb.SPLIT_STATUS_CANCELLED
    assert frozen.account.status == lpb.ACCOUNT_STATUS_FROZEN
    assert unfrozen.account.status == lpb.ACCOUNT_STATUS_ACTIVE
    assert all(e.HasField("created_at") for e in got)

    # filters and paging
    only = await events.all(0, types=["split.released", "account.frozen"])
    assert [e.seq for e in only] == [4, 6]
    page = await events.call("ListEvents", pb.ListEventsRequest(cursor=3, page_size=2))
    assert [e.seq for e in page.events] == [4, 5] and page.next_cursor == 5


async def test_a_batch_of_splits_writes_one_event_each(world, events: Events):
    start = len(await wait_events(events, 2))
    orders = [order(1_000 + i, rule_set_name="held") for i in range(30)]
    response = await world.splits.call("SplitBatch", spb.SplitBatchRequest(
        request_id=rid(), requests=[spb.SplitRequest(request_id=rid(), order=o)
                                    for o in orders]))
    ids = {o.split.split_id for o in response.outcomes}
    got = await wait_events(events, 30, cursor=start)
    assert {int(e.resource_id) for e in got} == ids and len(got) == 30
    assert [e.seq for e in got] == list(range(start + 1, start + 31))


async def test_watch_replays_then_follows_live_in_order(world, events: Events):
    await wait_events(events, 2)
    stream = events.watch(0, types=["split.held", "split.released"])
    seen: list[pb.Event] = []

    async def read(n: int) -> None:
        async for response in stream:
            seen.extend(response.events)
            if len(seen) >= n:
                return

    first = await world.splits.split(order(1_114, rule_set_name="held"))
    await asyncio.wait_for(read(1), 10)  # history
    await world.splits.call("ReleaseSplit", spb.ReleaseSplitRequest(
        request_id=rid(), order_id=first.order_id, event_name="SHIPPED"))
    await world.client.call("FreezeAccount", lpb.FreezeAccountRequest(
        request_id=rid(), account_id=world.ids["PLAT_001"], reason="filtered out"))
    second = await world.splits.split(order(2_000, rule_set_name="held"))
    await asyncio.wait_for(read(3), 10)  # live
    stream.cancel()
    assert [e.type for e in seen] == ["split.held", "split.released", "split.held"]
    assert [e.resource_id for e in seen] == [str(first.split_id)] * 2 + [str(second.split_id)]
    assert seen == sorted(seen, key=lambda e: e.seq)


async def test_cursor_errors_and_invalid_input(world, events: Events):
    await wait_events(events, 2)
    code, reason = await _refused(events.call("ListEvents", pb.ListEventsRequest(cursor=99)))
    assert (code, reason) == (grpc.StatusCode.OUT_OF_RANGE, "EVENT_CURSOR_AHEAD")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in events.watch(0, types=["split.nope"]):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)[1] == ["types[0]"]
    code, _ = await _refused(events.call("ListEvents", pb.ListEventsRequest(cursor=-1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_another_platform_sees_none_of_them(world, events: Events, channel,
                                                  database_url):
    from clearing.tenancy import create_platform
    await wait_events(events, 2)
    conn = await asyncpg.connect(database_url)
    try:
        _, key = await create_platform(conn, f"other_{rid()[:8]}", frozenset({"gateway"}))
    finally:
        await conn.close()
    assert await Events(channel, key).all() == []


async def test_a_slow_stream_ends_with_the_cursor_to_resume_from(
        world, events: Events, database_url, redis_url, redis_prefix, platform):
    base = server_settings(database_url, redis_url, redis_prefix)
    srv = await server.start(dataclasses.replace(
        base, events=dataclasses.replace(base.events, watch_lag_max=3, sequencer=False)),
        migrate=False)
    try:
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
        slow = Events(ch, platform.key)
        head = len(await wait_events(events, 2))
        stream = slow.watch(head)
        reader = asyncio.ensure_future(stream.read())
        await asyncio.sleep(0.3)  # the stream is live
        # a burst: ten events in one transaction, numbered in one sequencer round
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "INSERT INTO event_outbox (platform_id, type, resource_id, payload, created_at)"
                " SELECT $1, 'account.frozen', g::text, '', now() FROM generate_series(1, 10) g",
                platform.platform_id)
        finally:
            await conn.close()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(reader, 10)
            await stream.read()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details(err.value)[0] == "EVENT_CONSUMER_TOO_SLOW"
        assert f"cursor {head}" in err.value.details()
        resumed = await slow.all(head)  # nothing lost: resume from the cursor
        assert [e.seq for e in resumed] == list(range(head + 1, head + 11))
        await ch.close()
    finally:
        await srv.stop()


@pytest.mark.slow
async def test_two_server_processes(world, events: Events, database_url, redis_url,
                                    platform):
    """A stream on another process (`clearing serve`) sees the changes made through this
    one, live: the sequencer's notification crosses processes."""
    other = ServerProcess(database_url, redis_url,
                          extra_env={"CLEARING_EVENTS_WATCH_POLL_MS": "60000"}).start()
    try:
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{other.port}")
        remote = Events(ch, platform.key)
        head = len(await wait_events(events, 2))
        stream = remote.watch(head)
        await asyncio.sleep(0.3)
        made = [await world.splits.split(order(1_000 + i, rule_set_name="held"))
                for i in range(3)]
        got = []
        async for response in stream:
            got.extend(response.events)
            if len(got) >= 3:
                break
        stream.cancel()
        assert [e.resource_id for e in got] == [str(s.split_id) for s in made]
        assert [e.seq for e in got] == [head + 1, head + 2, head + 3]
        await ch.close()
    finally:
        other.terminate()


async def test_payout_events_through_review_and_the_bank(channel, client: Client, platform,
                                                         database_url):
    from clearing.v1 import payout_pb2 as ppb
    from tests.payout_support import Payouts, party, set_config
    from tests.split_support import new_key

    events = Events(channel, platform.key)
    maker = Payouts(channel, platform.key)
    checker = Payouts(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    p = await party(client, maker, funds=100_000)
    await set_config(database_url, platform.platform_id, review_threshold_minor=10_000)
    start = await events.head()
    big = await maker.request(p.account, 20_000, request_id="big")
    other = await maker.request(p.account, 20_001)
    await checker.reject(other.payout_id)
    await checker.approve(big.payout_id, request_id="approve-big")
    await maker.wait_state(big.payout_id, {ppb.PAYOUT_STATE_SUCCEEDED})
    small = await maker.request(p.account, 5_000, request_id="small")  # no review
    await maker.wait_state(small.payout_id, {ppb.PAYOUT_STATE_SUCCEEDED})
    got = await wait_events(events, 9, cursor=start,
                            types=[t for t in _PAYOUT_TYPES])
    assert [(e.type, e.request_id) for e in got[6:]] == [
        ("payout.requested", "small"), ("payout.sent", ""), ("payout.succeeded", "")]
    assert {e.resource_id for e in got[6:]} == {str(small.payout_id)}
    got = got[:6]
    mine = [(e.type, e.resource_id) for e in got]
    assert mine == [("payout.in_review", str(big.payout_id)),
                    ("payout.in_review", str(other.payout_id)),
                    ("payout.rejected", str(other.payout_id)),
                    ("payout.approved", str(big.payout_id)),
                    ("payout.sent", str(big.payout_id)),
                    ("payout.succeeded", str(big.payout_id))]
    assert got[0].request_id == "big" and got[3].request_id == "approve-big"
    assert got[-1].payout.state == ppb.PAYOUT_STATE_SUCCEEDED
    assert got[2].payout.state == ppb.PAYOUT_STATE_FAILED


_PAYOUT_TYPES = ("payout.requested", "payout.in_review", "payout.approved",
                 "payout.rejected", "payout.sent", "payout.succeeded", "payout.failed",
                 "payout.manual_review")


async def test_the_client_watch_resumes_after_a_server_restart(
        world, events: Events, database_url, redis_url, redis_prefix, platform):
    from clearing_client import ClearingClient
    from tests.support import free_port

    port = free_port()
    settings = dataclasses.replace(server_settings(database_url, redis_url, redis_prefix),
                                   grpc_addr=f"127.0.0.1:{port}")
    srv = await server.start(settings, migrate=False)
    head = len(await wait_events(events, 2))
    got: list[pb.Event] = []
    async with ClearingClient(f"127.0.0.1:{port}", platform.key, backoff_s=0.05) as c:
        watch = c.watch(head)
        try:
            first = await world.splits.split(order(1_000, rule_set_name="held"))
            got.append(await asyncio.wait_for(watch.__anext__(), 10))
            await srv.stop()  # the stream breaks; watch() reconnects
            second = await world.splits.split(order(1_001, rule_set_name="held"))
            srv = await server.start(settings, migrate=False)
            got.append(await asyncio.wait_for(watch.__anext__(), 15))
        finally:
            await watch.aclose()
            await srv.stop()
    assert [(e.seq, e.resource_id) for e in got] == [
        (head + 1, str(first.split_id)), (head + 2, str(second.split_id))]


async def test_refund_close_and_plain_split_events(channel, client: Client, platform,
                                                   database_url, events: Events):
    from tests.split_support import SUPPLIER_OWN

    world = await held_world(channel, client, database_url, platform.platform_id)
    own = (await client.open("DIST_01")).account_id
    assert own
    checker = await _approver(channel, database_url, platform.platform_id)
    published = await world.splits.publish(SUPPLIER_OWN)
    await checker.activate(published.name, published.version)
    start = len(await wait_events(events, 4))
    plain = await world.splits.split(order(1_000, rule_set_name="supplier-own"))
    await world.splits.call("RefundSplit", spb.RefundSplitRequest(
        request_id="refund-1", order_id=plain.order_id, amount_minor=300,
        currency_code="CNY", refund_ref="rf-1", reason="returned"))
    spare = await client.open("to-close")
    await client.call("CloseAccount", lpb.CloseAccountRequest(request_id=rid(),
                                                              account_id=spare.account_id))
    got = await wait_events(events, 3, cursor=start)
    assert [(e.type, e.resource_id) for e in got] == [
        ("split.committed", str(plain.split_id)), ("split.refunded", str(plain.split_id)),
        ("account.closed", str(spare.account_id))]
    assert got[1].request_id == "refund-1" and got[1].split.refunded_minor == 300
    assert got[2].account.status == lpb.ACCOUNT_STATUS_CLOSED


async def _approver(channel, database_url, platform_id):
    from tests.split_support import Splits, new_key
    return Splits(channel, await new_key(database_url, platform_id, {"approver"}))


async def test_retention_prunes_old_events_and_an_old_cursor_is_refused(
        events: Events, platform, database_url):
    from clearing.events.sequencer import prune

    conn = await asyncpg.connect(database_url)
    try:
        pid = platform.platform_id
        await conn.execute(
            "INSERT INTO events (platform_id, seq, outbox_id, type, resource_id, request_id,"
            " payload, created_at) SELECT $1, g, 0, 'account.frozen', g::text, '', '',"
            " now() - make_interval(days => CASE WHEN g < 3 THEN 40 ELSE 0 END)"
            " FROM generate_series(1, 3) g", pid)
        await conn.execute("INSERT INTO event_heads (platform_id, seq) VALUES ($1, 3)", pid)
        assert [e.seq for e in await events.all()] == [1, 2, 3]
        assert await prune(conn, 30) >= 2  # this run's other old rows too, if any
    finally:
        await conn.close()
    assert [e.seq for e in await events.all()] == [3]  # 0: from the oldest kept
    code, reason = await _refused(events.call("ListEvents", pb.ListEventsRequest(cursor=1)))
    assert (code, reason) == (grpc.StatusCode.OUT_OF_RANGE, "EVENT_CURSOR_EXPIRED")
    assert [e.seq for e in (await events.call("ListEvents", pb.ListEventsRequest(
        cursor=2))).events] == [3]


async def test_a_risk_hold_writes_its_risk_event_with_the_split(channel, client: Client,
                                                                platform, database_url,
                                                                events: Events):
    from tests.risk_support import limits, make_world

    world = await make_world(channel, client, database_url, platform.platform_id)
    await world.file_policy(limits=[limits(large_split_minor=50_000)])
    start = await events.head()
    above = await world.splits.split(order(51_001, rule_set_name="to-m"))
    got = await wait_events(events, 2, cursor=start)
    assert [(e.type, e.resource_id) for e in got] == [
        ("split.held", str(above.split_id)), ("risk_event.opened", got[1].resource_id)]
    assert got[1].risk_event.split_id == above.split_id
    assert got[1].risk_event.event_id == int(got[1].resource_id)


async def test_a_pruned_hole_in_the_feed_is_never_skipped_silently(
        events: Events, platform, database_url):
    """The prune deletes old events by created_at (the change's clock, not in seq order;
    a bounded slice, any of the old rows) and a reader's cursor check and its read are two
    statements: a reader must never jump over events that were pruned meanwhile. The page
    stops before the hole; a read that starts at it is EVENT_CURSOR_EXPIRED with the cursor
    to resume from."""
    conn = await asyncpg.connect(database_url)
    try:
        pid = platform.platform_id
        await conn.execute(
            "INSERT INTO events (platform_id, seq, outbox_id, type, resource_id, request_id,"
            " payload, created_at) SELECT $1, g, 0, 'account.frozen', g::text, '', '', now()"
            " FROM generate_series(1, 6) g WHERE g <> 4", pid)  # 4: pruned
        await conn.execute("INSERT INTO event_heads (platform_id, seq) VALUES ($1, 6)", pid)
    finally:
        await conn.close()
    for types in ((), ("account.frozen",)):
        page = await events.call("ListEvents", pb.ListEventsRequest(cursor=1, types=types))
        assert [e.seq for e in page.events] == [2, 3] and page.next_cursor == 3, types
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await events.call("ListEvents", pb.ListEventsRequest(cursor=3, types=types))
        assert (err.value.code(), details(err.value)[0]) == (
            grpc.StatusCode.OUT_OF_RANGE, "EVENT_CURSOR_EXPIRED"), types
        assert "cursor 4" in err.value.details()
        page = await events.call("ListEvents", pb.ListEventsRequest(cursor=4, types=types))
        assert [e.seq for e in page.events] == [5, 6], types
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a stream stops at the hole too
        async for reply in events.watch(cursor=1):
            assert [e.seq for e in reply.events] == [2, 3]
    assert details(err.value)[0] == "EVENT_CURSOR_EXPIRED"
