"""PostgreSQL pods (docs/scaling.md "Platform pods"): two PostgreSQL instances, the machine's
(home, pod 0: a database of this module's own) and an embedded one started here (pod 1);
one server with both. Platforms on each pod book splits, accounts and balances in their own
pod only, VerifyLedger passes on each; a platform with a ledger moves from pod 0 to pod 1
(`clearing pods move`): refused while it moves, then served from pod 1 with the same
balances and the same verified totals."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import secrets
import sys

import asyncpg
import grpc
import pytest

from clearing import db, pods_move, server
from clearing.clock import ManualClock
from clearing.dev.embedded_postgres import start_postgres
from clearing.ledger import verify
from clearing.limits import POD_ID_SPAN, POD_ROUTES_BOUND_S
from clearing.payout.schedule import Scheduler, SchedulerSettings
from clearing.tenancy import create_platform
from clearing.v1 import split_pb2 as pb
from clearing.config import EventSettings
from clearing.v1 import event_pb2 as epb
from clearing.v1 import payout_pb2 as ppb
from tests.conftest import _replace_db, server_settings
from tests.events_support import Events
from tests.payout_support import MASKED, Payouts, party, set_config
from tests.split_support import Splits, new_key, open_accounts, order
from tests.support import Client, details, rid
from tests.unit.rules.helpers import EXAMPLES

# REQUIREMENTS.md's B2B order: 850,000.00 to the government account, the platform, the
# supplier and the logistics company (2%, 9.8%, 73.5%, 14.7%).
B2B_LEGS = [1_700_000, 8_330_000, 62_475_000, 12_495_000]
B2B_REFS = ["GOV_ACCOUNT", "PLAT_001", "SUP_2025001", "LOGISTICS_B"]
WATCH_POLL_MS = 60_000


def b2b_order(**kw) -> pb.Order:
    return order(85_000_000, rule_set_name="b2b", tags=["government purchase"],
                 attributes={"customer_type": "enterprise"}, **kw)


@pytest.fixture(scope="module")
async def pods(pg_admin_dsn, redis_url, redis_prefix, embedded_dir):
    """(server, home DSN, pod 1 DSN): a home database of its own on the machine's
    PostgreSQL, pod 1 an embedded PostgreSQL of its own."""
    home_name = f"clearing_pods_{secrets.token_hex(4)}"
    await db.ensure_database(pg_admin_dsn, home_name)
    home = _replace_db(pg_admin_dsn, home_name)
    # in the run's own folder: pytest's shared /tmp/pytest-of-root may be made private to
    # another user by a concurrent pytest, and initdb runs as `pgserver` under root
    pg = await asyncio.to_thread(start_postgres,
                                 embedded_dir / f"pod1-{secrets.token_hex(4)}" / "pgdata")
    pod1 = pg.dsn
    # small pools: the machine's PostgreSQL is shared with the other test processes
    # live streams poll once a minute: an event reaches them by its pod's notification
    running = await server.start(server_settings(
        home, redis_url, redis_prefix, pods=f"1={pod1}", db_pool_min=1, db_pool_max=6,
        events=EventSettings(webhooks=False, watch_poll_ms=WATCH_POLL_MS)))
    try:
        yield running, home, pod1
    finally:
        await running.stop()
        await asyncio.to_thread(pg.stop)
        await db.drop_database(pg_admin_dsn, home_name)


async def _platform(home: str) -> tuple[int, str]:
    conn = await asyncpg.connect(home)
    try:
        return await create_platform(conn, f"p_{secrets.token_hex(6)}",
                                     frozenset({"gateway", "operator"}))
    finally:
        await conn.close()


async def _move(home: str, dsns: dict[int, str], platform_id: int, target: int):
    conn = await asyncpg.connect(home)
    try:
        return await pods_move.move(conn, dsns, platform_id, target, settle_s=0)
    finally:
        await conn.close()


async def _b2b(channel, home: str, platform_id: int, key: str) -> tuple[Client, Splits,
                                                                         dict[str, int]]:
    """The B2B rule set filed (maker, then another key approves) and its accounts opened."""
    client = Client(channel, key)
    ids = await open_accounts(client)
    maker = Splits(channel, key)
    published = await maker.publish((EXAMPLES / "b2b.yaml").read_text())
    await Splits(channel, await new_key(home, platform_id, {"approver"})).activate(
        published.name, published.version)
    return client, maker, ids


async def _count(dsn: str, sql: str, *args) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def _system_ok(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return (await verify.verify_on(conn, None)).ok
    finally:
        await conn.close()


async def _verify_all(home: str, pod1: str) -> dict:
    """`clearing verify --all` with both pods configured."""
    env = {**os.environ, "CLEARING_DATABASE_URL": home, "CLEARING_PODS": f"1={pod1}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clearing.cli", "verify", "--all", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    return json.loads(out)


async def test_platforms_on_two_pods_book_each_in_its_own(pods):
    running, home, pod1 = pods
    a_id, a_key = await _platform(home)
    b_id, b_key = await _platform(home)
    await _move(home, {0: home, 1: pod1}, b_id, 1)  # empty yet: placing it on pod 1
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        for platform_id, key in ((a_id, a_key), (b_id, b_key)):
            client, splits, ids = await _b2b(channel, home, platform_id, key)
            split = await splits.split(b2b_order())
            assert [leg.amount_minor for leg in split.legs] == B2B_LEGS
            for ref, amount in zip(B2B_REFS, B2B_LEGS):
                assert (await client.balance(ids[ref])).posted_minor == amount
            assert (await client.balance(ids["CUSTODIAL"])).posted_minor == -85_000_000
            report = await client.verify()
            assert (report.ok, report.chain_ok, report.transfer_count) == (True, True, 4)
            assert report.account_count == len(ids)
            # pod 1's ids start at 2**32 (ids unique across pods)
            assert (split.split_id >= POD_ID_SPAN) == (platform_id == b_id)
            assert (ids["CUSTODIAL"] >= POD_ID_SPAN) == (platform_id == b_id)
    accounts = "SELECT count(*) FROM accounts WHERE platform_id = $1"
    splits_sql = "SELECT count(*) FROM splits WHERE platform_id = $1"
    assert [await _count(home, accounts, p) for p in (a_id, b_id)] == [len(ids), 0]
    assert [await _count(pod1, accounts, p) for p in (a_id, b_id)] == [0, len(ids)]
    assert [await _count(home, splits_sql, p) for p in (a_id, b_id)] == [1, 0]
    assert [await _count(pod1, splits_sql, p) for p in (a_id, b_id)] == [0, 1]
    assert await _system_ok(home) and await _system_ok(pod1)


async def test_a_platform_moves_with_its_ledger(pods):
    running, home, pod1 = pods
    platform_id, key = await _platform(home)
    dsns = {0: home, 1: pod1}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        client, splits, ids = await _b2b(channel, home, platform_id, key)
        first = b2b_order()
        await splits.split(first)
        await client.transfer(ids["SUP_2025001"], ids["PLAT_001"], 12_345)
        before = await client.verify()
        assert before.ok and before.transfer_count == 5

        # marked moving: every call of the platform is refused, retryable
        conn = await asyncpg.connect(home)
        try:
            await pods_move.set_route(conn, platform_id, 0, True)
        finally:
            await conn.close()
        await asyncio.sleep(POD_ROUTES_BOUND_S + 0.3)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.balance(ids["PLAT_001"])
        assert (err.value.code(), details(err.value)[0]) == (grpc.StatusCode.UNAVAILABLE,
                                                             "PLATFORM_MOVING")

        moved = await _move(home, dsns, platform_id, 1)
        assert (moved.source, moved.target) == (0, 1)
        assert moved.rows["accounts"] == len(ids) and moved.rows["transfers"] == 5
        assert moved.rows["splits"] == 1 and moved.rows["split_legs"] == 4

        # served from pod 1: the same balances, split and verified totals
        assert (await client.balance(ids["PLAT_001"])).posted_minor == 8_330_000 + 12_345
        assert (await client.balance(ids["SUP_2025001"])).posted_minor == 62_475_000 - 12_345
        got = await splits.call("GetSplit", pb.GetSplitRequest(order_id=first.order_id))
        assert [leg.amount_minor for leg in got.split.legs] == B2B_LEGS
        after = await client.verify()
        assert after.ok and after.chain_ok
        assert (list(after.totals), after.account_count, after.transfer_count) == (
            list(before.totals), before.account_count, before.transfer_count)
        # and it books there: a new split, ids of pod 1
        split = await splits.split(b2b_order())
        assert split.split_id >= POD_ID_SPAN
        assert (await client.balance(ids["SUP_2025001"])).posted_minor == (
            2 * 62_475_000 - 12_345)
        assert (await client.verify()).transfer_count == 9

    # the source keeps its rows (records are never deleted), no call reaches them
    transfers = "SELECT count(*) FROM transfers WHERE platform_id = $1"
    assert await _count(home, transfers, platform_id) == 5
    assert await _count(pod1, transfers, platform_id) == 9
    assert await _system_ok(home) and await _system_ok(pod1)
    # the operator's whole-system check covers every pod
    doc = await _verify_all(home, pod1)
    assert doc["ok"] and doc["pods"]["1"]["ok"]
    assert doc["pods"]["1"]["transfer_count"] >= 9 and doc["transfer_count"] >= 5
    # so it never moves back onto them
    with pytest.raises(pods_move.MoveError, match="holds rows of platform"):
        await _move(home, dsns, platform_id, 0)


async def test_a_payout_of_a_platform_on_pod_1_is_worked_by_pod_1s_worker(pods):
    """Pod 1's payout worker claims it from pod 1 and sends it to pod 1's bank connector;
    its posting goes through pod 1's ledger writer."""
    running, home, pod1 = pods
    platform_id, key = await _platform(home)
    await _move(home, {0: home, 1: pod1}, platform_id, 1)
    await set_config(pod1, platform_id)  # see docs/scaling.md: not yet through PlatformService
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        client, payouts = Client(channel, key), Payouts(channel, key)
        parties = await party(client, payouts, funds=100_000)
        payout = await payouts.request(parties.account, 60_000)
        done = await payouts.wait_state(payout.payout_id, (ppb.PAYOUT_STATE_SUCCEEDED,))
        assert done.paid_minor == 60_000
        assert (await client.balance(parties.account)).posted_minor == 40_000
        assert (await client.verify()).ok
    [jobs] = running.pod_jobs
    books = await jobs.bank.books(f"po{payout.payout_id}-")
    assert [(e.amount_minor, e.paid, e.masked_account) for e in books] == [
        (60_000, True, MASKED)]
    payouts_sql = "SELECT count(*) FROM payouts WHERE platform_id = $1"
    assert (await _count(home, payouts_sql, platform_id),
            await _count(pod1, payouts_sql, platform_id)) == (0, 1)


async def test_a_live_stream_of_a_platform_on_pod_1_hears_its_pod(pods):
    """WatchEvents of a pod-1 platform is woken by pod 1's notification (the stream's own
    poll is a minute away): each pod has its LISTEN connection."""
    running, home, pod1 = pods
    platform_id, key = await _platform(home)
    await _move(home, {0: home, 1: pod1}, platform_id, 1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        _, splits, _ = await _b2b(channel, home, platform_id, key)
        events = Events(channel, key)
        stream = events.watch(0, types=["split.committed"])
        seen: list[epb.Event] = []

        async def read(n: int) -> None:
            async for response in stream:
                seen.extend(response.events)
                if len(seen) >= n:
                    return

        first = await splits.split(b2b_order())
        await asyncio.wait_for(read(1), 20)  # the history
        second = await splits.split(b2b_order())
        await asyncio.wait_for(read(2), WATCH_POLL_MS / 1000 / 3)  # live: not by the poll
        stream.cancel()
    assert [e.resource_id for e in seen] == [str(first.split_id), str(second.split_id)]


async def test_a_platform_on_a_pod_the_server_lacks_is_refused(pods):
    running, home, _ = pods
    platform_id, key = await _platform(home)
    conn = await asyncpg.connect(home)
    try:
        await pods_move.set_route(conn, platform_id, 7, False)
    finally:
        await conn.close()
    await asyncio.sleep(POD_ROUTES_BOUND_S + 0.3)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await Client(channel, key).verify()
    assert (err.value.code(), details(err.value)[0]) == (grpc.StatusCode.UNAVAILABLE,
                                                         "POD_NOT_CONFIGURED")


async def test_a_dsn_of_another_pod_stops_the_server(pods, redis_url, redis_prefix):
    _, home, pod1 = pods
    with pytest.raises(SystemExit, match="the database given for pod 2 is pod 1"):
        await server.start(server_settings(home, redis_url, redis_prefix, run_worker=False,
                                           pods=f"2={pod1}", db_pool_min=1, db_pool_max=2))


async def test_a_move_to_an_unknown_pod_or_in_place_is_refused(pods):
    _, home, pod1 = pods
    platform_id, _ = await _platform(home)
    with pytest.raises(pods_move.MoveError, match="pod 3 has no DSN"):
        await _move(home, {0: home, 1: pod1}, platform_id, 3)
    with pytest.raises(pods_move.MoveError, match="on pod 0 already"):
        await _move(home, {0: home, 1: pod1}, platform_id, 0)


async def test_the_source_pods_jobs_leave_a_moved_platform_alone(pods):
    """A moved platform's rows stay on the source (an archive), where the source pod's
    payout scheduler sweeps every schedule of its database: a weekly schedule set before
    the move would pay the archived balance out again once due, while the target holds and
    pays the same money. The move retires the source's schedules (and due bank transfers
    and webhook deliveries): a sweep of the source a month later makes no payout."""
    running, home, pod1 = pods
    platform_id, key = await _platform(home)
    await set_config(home, platform_id)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        client, payouts = Client(channel, key), Payouts(channel, key)
        parties = await party(client, payouts, funds=100_000)
        await payouts.call("SetPayoutSchedule", ppb.SetPayoutScheduleRequest(
            request_id=rid(), schedule=ppb.PayoutSchedule(
                account_id=parties.account, cycle=ppb.PAYOUT_CYCLE_WEEKLY, weekday=3)))
        await _move(home, {0: home, 1: pod1}, platform_id, 1)
        # a month later, the source pod's scheduler (outside a call: the home pod's)
        later = ManualClock(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=31))
        source = Scheduler(dataclasses.replace(running.payouts, clock=later),
                           SchedulerSettings())
        assert [o for o in await source.tick() if o.platform_id == platform_id] == []
        payouts_sql = "SELECT count(*) FROM payouts WHERE platform_id = $1"
        assert await _count(home, payouts_sql, platform_id) == 0
        # the target keeps the schedule as it was set, the money where it was
        assert (await client.balance(parties.account)).posted_minor == 100_000
        schedules = ("SELECT count(*) FROM payout_schedules WHERE platform_id = $1"
                     " AND next_run_at < now() + interval '8 days'")
        assert (await _count(home, schedules, platform_id),
                await _count(pod1, schedules, platform_id)) == (0, 1)


async def test_a_stream_opened_before_a_move_books_nothing_on_the_source(pods):
    """A SplitStream is routed once, when it opens: kept open while its platform is marked
    moving, its next order would be booked on the source while the move copies it (or
    after: an archive no call reads). The writer refuses it, PLATFORM_MOVING, retryable."""
    running, home, _ = pods
    platform_id, key = await _platform(home)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        _, splits, _ = await _b2b(channel, home, platform_id, key)
        stream = splits.stub.SplitStream(metadata=splits.metadata)
        await stream.write(pb.SplitStreamRequest(request_id=rid(), order=b2b_order()))
        first = await stream.read()
        assert first.outcome.WhichOneof("result") == "split"
        conn = await asyncpg.connect(home)
        try:
            await pods_move.set_route(conn, platform_id, 0, True)
            await asyncio.sleep(POD_ROUTES_BOUND_S + 0.3)
            await stream.write(pb.SplitStreamRequest(request_id=rid(), order=b2b_order()))
            second = await stream.read()
            await stream.done_writing()
        finally:
            await pods_move.set_route(conn, platform_id, 0, False)
            await conn.close()
    assert (second.outcome.error.reason, second.outcome.error.code) == (
        "PLATFORM_MOVING", grpc.StatusCode.UNAVAILABLE.value[0])
    splits_sql = "SELECT count(*) FROM splits WHERE platform_id = $1"
    assert await _count(home, splits_sql, platform_id) == 1


async def test_payout_configuration_of_a_platform_off_the_home_pod_is_refused(pods):
    """PlatformService keeps payout configuration in the home pod (not pod-aware yet): for a
    platform on pod 1 it is refused (FAILED_PRECONDITION PAYOUT_CONFIG_NOT_ON_HOME_POD), never
    written in the home where the platform's payouts would not read it; a change made before
    the move cannot be approved after it. A home platform is served as before."""
    from clearing.v1 import ledger_pb2 as lpb
    from clearing.v1 import platform_pb2 as plpb
    from tests.integration.test_platform_admin import Admin, _admin_key

    running, home, pod1 = pods
    home_id, _ = await _platform(home)
    platform_id, key = await _platform(home)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        maker = Admin(channel, (await _admin_key(home))[1])
        checker = Admin(channel, (await _admin_key(home))[1])
        fees = (await Client(channel, key).open("fees", kind=lpb.ACCOUNT_KIND_PLATFORM))
        wanted = (await maker.call("GetPayoutConfig", plpb.GetPayoutConfigRequest(
            platform_id=platform_id, currency_code="CNY"))).config
        wanted.fee_fixed_minor, wanted.fee_account_id = 400, fees.account_id
        change = (await maker.call("SetPayoutConfig", plpb.SetPayoutConfigRequest(
            request_id=rid(), config=wanted))).change
        assert change.state == plpb.PAYOUT_CONFIG_CHANGE_STATE_PENDING
        await _move(home, {0: home, 1: pod1}, platform_id, 1)
        calls = [
            maker.call("GetPayoutConfig", plpb.GetPayoutConfigRequest(
                platform_id=platform_id, currency_code="CNY")),
            maker.call("SetPayoutConfig", plpb.SetPayoutConfigRequest(
                request_id=rid(), config=wanted)),
            checker.call("ApprovePayoutConfigChange", plpb.ApprovePayoutConfigChangeRequest(
                change_id=change.change_id)),
            checker.call("RejectPayoutConfigChange", plpb.RejectPayoutConfigChangeRequest(
                change_id=change.change_id))]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert details(err.value)[0] == "PAYOUT_CONFIG_NOT_ON_HOME_POD"
        got = await maker.call("GetPayoutConfig", plpb.GetPayoutConfigRequest(
            platform_id=home_id, currency_code="CNY"))
        assert got.config.platform_id == home_id
