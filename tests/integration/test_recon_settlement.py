"""PostSettlement through the generated stubs against real PostgreSQL and the real ledger:
the statement's settled total booked ONCE from the channel's clearing account into the
custodial account, recorded on the run; replays, a second settlement refused, a superseding
statement settling the difference, and a crash between the posting and its record. The day
is `recon_support.HandDay` (its figures worked out by hand in its docstring)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from clearing.recon import accounts, settle
from clearing.recon import store as recon_store
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import reconciliation_pb2 as rpb
from tests.recon_support import CHANNEL, HandDay, ReconWorld, hand_day
from tests.split_support import new_key
from tests.support import Client, details, rid

CLEARING_REF = f"recon:channel-clearing:{CHANNEL}:CNY"
# The splits of a, b and m debit the custodial account by their amounts net of the
# channel's fee: 99,400 + 49,700 + 29,820.
SPLITS_NET_MINOR = 178_920
STATEMENT_MINOR = 168_979


@pytest.fixture
async def world(channel, client: Client, database_url, platform) -> ReconWorld:
    return await ReconWorld.make(channel, client, database_url, platform.platform_id,
                                 platform.key)


@pytest.fixture
async def day(world: ReconWorld) -> HandDay:
    return await hand_day(world)


async def posted(client: Client, ref: str) -> int:
    account = (await client.call("GetAccount", lpb.GetAccountRequest(external_ref=ref))).account
    return (await client.balance(account.account_id)).posted_minor


async def settle_run(world: ReconWorld, run_id: int, request_id: str | None = None,
                     metadata=None) -> rpb.ReconciliationRun:
    response = await world.call("PostSettlement", rpb.PostSettlementRequest(
        request_id=request_id or rid(), run_id=run_id), metadata)
    return response.run


async def refused(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), details(err.value)[0]


async def test_the_statement_total_is_booked_once(world: ReconWorld, day: HandDay,
                                                  client: Client):
    assert day.run.statement_settled_minor == STATEMENT_MINOR
    assert day.run.split_settled_minor == SPLITS_NET_MINOR
    assert day.run.difference_minor == -9_941
    assert not day.run.HasField("settlement")
    assert await posted(client, "custodial-CNY") == -SPLITS_NET_MINOR

    run = await settle_run(world, day.run.run_id, "settle-1")
    s = run.settlement
    assert (s.amount_minor, s.posted_before_minor, s.currency_code, s.request_id) == (
        STATEMENT_MINOR, 0, "CNY", "settle-1")
    assert s.transfer_id > 0 and s.posting_request_id.endswith(
        f"recon-settle:{run.statement.statement_id}")
    # the funds flow in the ledger: custodial nets to the run's difference
    assert await posted(client, "custodial-CNY") == -SPLITS_NET_MINOR + STATEMENT_MINOR == -9_941
    assert await posted(client, CLEARING_REF) == -STATEMENT_MINOR
    clearing = (await client.call("GetAccount", lpb.GetAccountRequest(
        external_ref=CLEARING_REF))).account
    assert clearing.kind == lpb.ACCOUNT_KIND_CHANNEL_CLEARING and clearing.allow_negative
    assert clearing.account_id == s.channel_clearing_account_id
    got = (await world.call("GetReconciliationRun",
                            rpb.GetReconciliationRunRequest(run_id=day.run.run_id))).run
    assert got == run

    # the same request id: the first response; another: refused; nothing moves again
    assert await settle_run(world, day.run.run_id, "settle-1") == run
    assert await refused(settle_run(world, day.run.run_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "STATEMENT_ALREADY_SETTLED")
    assert await posted(client, CLEARING_REF) == -STATEMENT_MINOR
    assert await posted(client, "custodial-CNY") == -9_941
    assert (await client.verify()).ok


async def test_refusals(world: ReconWorld, day: HandDay, platform, database_url):
    assert await refused(settle_run(world, 10**12)) == (
        grpc.StatusCode.NOT_FOUND, "RECONCILIATION_RUN_NOT_FOUND")
    for bad in ({"run_id": 0}, {"run_id": -4}, {"request_id": ""}):
        request = rpb.PostSettlementRequest(request_id=rid(), run_id=day.run.run_id)
        for field, value in bad.items():
            setattr(request, field, value)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.call("PostSettlement", request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(err.value)[1] == list(bad)
    for roles in ({"gateway"}, {"approver"}):
        key = await new_key(database_url, platform.platform_id, roles)
        code, _ = await refused(settle_run(world, day.run.run_id,
                                           metadata=(("authorization", f"Bearer {key}"),)))
        assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_a_superseding_statement_settles_the_difference(world: ReconWorld,
                                                               day: HandDay, client: Client):
    await settle_run(world, day.run.run_id)
    # the corrected file drops g's line (19,880): the channel settled 149,099
    second = (await world.import_file(day.csv(day.lines[:2]), day=day.day)).run
    assert second.statement_settled_minor == 149_099
    assert await refused(settle_run(world, day.run.run_id, "again")) == (
        grpc.StatusCode.FAILED_PRECONDITION, "STATEMENT_ALREADY_SETTLED")
    s = (await settle_run(world, second.run_id)).settlement
    assert (s.amount_minor, s.posted_before_minor) == (-19_880, STATEMENT_MINOR)
    assert await posted(client, CLEARING_REF) == -149_099
    assert await posted(client, "custodial-CNY") == -SPLITS_NET_MINOR + 149_099 == -29_821
    # the first file once more: a correction of the correction posts the 19,880 back
    third = (await world.import_file(day.csv(), day=day.day)).run
    s = (await settle_run(world, third.run_id)).settlement
    assert (s.amount_minor, s.posted_before_minor) == (19_880, 149_099)
    assert await posted(client, CLEARING_REF) == -STATEMENT_MINOR
    # the same total again: settled with no transfer
    fourth = (await world.import_file(day.csv(list(reversed(day.lines))), day=day.day)).run
    s = (await settle_run(world, fourth.run_id)).settlement
    assert (s.amount_minor, s.posted_before_minor, s.transfer_id, s.posting_request_id) == (
        0, STATEMENT_MINOR, 0, "")
    # a superseded statement that was never settled cannot be
    assert await refused(settle_run(world, third.run_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "STATEMENT_ALREADY_SETTLED")
    fifth = (await world.import_file(day.csv(day.lines[:1]), day=day.day)).run
    await world.import_file(day.csv(day.lines[1:]), day=day.day)
    assert await refused(settle_run(world, fifth.run_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "STATEMENT_SUPERSEDED")
    assert (await client.verify()).ok


async def test_a_crash_after_the_posting_moves_nothing_twice(world: ReconWorld, day: HandDay,
                                                             client: Client, running, platform):
    """The posting committed, its settlement row not (the server died in between): the next
    PostSettlement gets the committed transfer back from the writer and records it."""
    async with running.pool.acquire() as conn:
        run = await recon_store.load_run(conn, platform.platform_id, day.run.run_id)
        custodial_id = await accounts.custodial(conn, platform.platform_id, "CNY")
    clearing_id = await accounts.ensure_clearing(running.pool, platform.platform_id, CHANNEL,
                                                 "CNY")
    sent = await running.writer.submit(settle.settlement_posting(
        platform.platform_id, run, clearing_id, custodial_id, STATEMENT_MINOR, "CNY"))
    assert await posted(client, CLEARING_REF) == -STATEMENT_MINOR
    s = (await settle_run(world, day.run.run_id)).settlement
    assert s.transfer_id == sent[0].transfer_id and s.amount_minor == STATEMENT_MINOR
    assert await posted(client, CLEARING_REF) == -STATEMENT_MINOR
    assert await posted(client, "custodial-CNY") == -9_941


async def test_a_posting_without_its_row_counts_when_a_correction_supersedes_it(
        world: ReconWorld, day: HandDay, client: Client, running, platform):
    """The first statement's posting committed, its row not (the call was cut off); then a
    corrected file supersedes it, so its row can never be written: the correction's
    settlement counts that posting and moves only the difference (not its whole total)."""
    async with running.pool.acquire() as conn:
        run = await recon_store.load_run(conn, platform.platform_id, day.run.run_id)
        custodial_id = await accounts.custodial(conn, platform.platform_id, "CNY")
    clearing_id = await accounts.ensure_clearing(running.pool, platform.platform_id, CHANNEL,
                                                 "CNY")
    await running.writer.submit(settle.settlement_posting(
        platform.platform_id, run, clearing_id, custodial_id, STATEMENT_MINOR, "CNY"))
    # the corrected file drops g's line (19,880): the channel settled 149,099
    second = (await world.import_file(day.csv(day.lines[:2]), day=day.day)).run
    s = (await settle_run(world, second.run_id)).settlement
    assert (s.amount_minor, s.posted_before_minor) == (149_099 - STATEMENT_MINOR,
                                                       STATEMENT_MINOR)
    assert await posted(client, CLEARING_REF) == -149_099
    assert await posted(client, "custodial-CNY") == -SPLITS_NET_MINOR + 149_099
    assert (await client.verify()).ok


async def test_concurrent_settlements_post_once(world: ReconWorld, day: HandDay,
                                                client: Client):
    outcomes = await asyncio.gather(*(settle_run(world, day.run.run_id) for _ in range(4)),
                                    return_exceptions=True)
    ok = [o for o in outcomes if isinstance(o, rpb.ReconciliationRun)]
    assert len(ok) == 1, outcomes
    for o in outcomes:
        if o is not ok[0]:
            assert details(o)[0] == "STATEMENT_ALREADY_SETTLED"
    assert await posted(client, CLEARING_REF) == -STATEMENT_MINOR
