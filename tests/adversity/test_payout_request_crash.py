"""A server killed (SIGKILL) in the middle of a burst of RequestPayout calls: every payout
that was acknowledged is there, there is no hold without its payout nor a payout without
its hold, and the ledger verifies."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest

from clearing.v1 import payout_pb2 as pb
from tests.payout_support import Payouts, party, set_config
from tests.support import ServerProcess, rid

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

CALLS = 300
AMOUNT = 100
FEE = 1


async def test_kill_during_payout_requests_leaves_no_orphan_hold(client, platform,
                                                                database_url, redis_url,
                                                                redis_prefix):
    proc = ServerProcess(database_url, redis_url,
                         extra_env={"CLEARING_REDIS_PREFIX": redis_prefix,
                                    "CLEARING_PAYOUT_WORKER": "0",
                                    "CLEARING_PAYOUT_SCHEDULER": "0"})
    await asyncio.to_thread(proc.start)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{proc.port}")
    acknowledged: list[int] = []
    try:
        remote = Payouts(channel, platform.key)
        p = await party(client, remote, funds=CALLS * AMOUNT)
        await set_config(database_url, platform.platform_id, fee_fixed_minor=FEE,
                         fee_account_id=p.fee)
        await remote.call("ListPayouts", pb.ListPayoutsRequest())  # key cached, pool warm

        async def one() -> None:
            try:
                acknowledged.append((await remote.request(p.account, AMOUNT,
                                                          request_id=rid())).payout_id)
            except grpc.aio.AioRpcError:
                pass

        calls = [asyncio.ensure_future(one()) for _ in range(CALLS)]
        while len(acknowledged) < 20:
            await asyncio.sleep(0.005)
        proc.kill()
        await asyncio.gather(*calls)
    finally:
        proc.kill()
        await channel.close()
    assert 20 <= len(acknowledged) < CALLS

    conn = await asyncpg.connect(database_url)
    try:
        payouts = await conn.fetch(
            "SELECT p.payout_id, p.amount_minor, p.fee_minor, h.amount AS held,"
            " h.pending_state AS hs, f.amount AS fee_held FROM payouts p"
            " LEFT JOIN transfers h ON h.transfer_id = p.hold_transfer_id"
            " LEFT JOIN transfers f ON f.transfer_id = p.fee_transfer_id"
            " WHERE p.account_id = $1", p.account)
        holds = await conn.fetch(
            "SELECT transfer_id, amount FROM transfers WHERE debit_account_id = $1"
            " AND mode = 2", p.account)
        debits = await conn.fetchval(
            "SELECT debits_pending + debits_posted FROM accounts WHERE account_id = $1",
            p.account)
    finally:
        await conn.close()
    ids = {r["payout_id"] for r in payouts}
    assert set(acknowledged) <= ids  # durable before acknowledged
    for r in payouts:  # every payout has its hold, exactly
        # held, or already posted by the session server's worker (a fault-free bank)
        assert (r["held"], r["fee_held"]) == (AMOUNT - FEE, FEE) and r["hs"] in (1, 2)
    # and every hold belongs to a payout: two legs per payout, nothing else
    assert len(holds) == 2 * len(payouts)
    assert debits == sum(r["amount_minor"] for r in payouts) == AMOUNT * len(ids)
    b = await client.balance(p.account)
    assert b.available_minor == CALLS * AMOUNT - AMOUNT * len(ids)
    report = await client.verify()
    assert report.ok and report.chain_ok
