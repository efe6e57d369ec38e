"""Two server processes, each running its scheduler every second, against one database:
every due run makes exactly one payout."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import grpc
import pytest

from clearing.payout.model import PayoutOrigin
from clearing.v1 import payout_pb2 as pb
from tests.payout_support import Payouts, party, set_config
from tests.support import Client, ServerProcess, rid

ACCOUNT_COUNT = 8
SWEPT_WITHIN_S = 20.0


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_two_processes_make_one_payout_per_due_run(database_url, redis_url,
                                                         redis_prefix, platform):
    env = {"CLEARING_REDIS_PREFIX": redis_prefix, "CLEARING_PAYOUT_WORKER": "0",
           "CLEARING_PAYOUT_SCHEDULE_TICK_S": "1"}
    procs = [ServerProcess(database_url, redis_url, extra_env=env).start() for _ in range(2)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") for p in procs]
    conn = await asyncpg.connect(database_url)
    try:
        await set_config(database_url, platform.platform_id, min_amount_minor=1)
        client, payouts = Client(channels[0], platform.key), Payouts(channels[1], platform.key)
        funds = {}
        for i in range(ACCOUNT_COUNT):
            p = await party(client, payouts, funds=10_000 + i, prefix=f"p{i}-")
            await payouts.call("SetPayoutSchedule", pb.SetPayoutScheduleRequest(
                request_id=rid(), schedule=pb.PayoutSchedule(
                    account_id=p.account, cycle=pb.PAYOUT_CYCLE_WEEKLY, weekday=1)))
            funds[p.account] = 10_000 + i
        # make every run due now (a weekly run sweeps the whole available balance)
        await conn.execute("UPDATE payout_schedules SET next_run_at = now() - interval '1s'"
                           " WHERE platform_id = $1", platform.platform_id)
        started = time.monotonic()
        while await conn.fetchval(
                "SELECT count(*) FROM payout_schedules WHERE platform_id = $1"
                " AND next_run_at <= now()", platform.platform_id):
            assert time.monotonic() - started < SWEPT_WITHIN_S, "runs not made in time"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.5)   # more ticks of both processes: nothing more may happen
        rows = await conn.fetch(
            "SELECT account_id, amount_minor FROM payouts WHERE platform_id = $1"
            " AND origin = $2 ORDER BY account_id", platform.platform_id,
            int(PayoutOrigin.SCHEDULE))
        assert [(r["account_id"], r["amount_minor"]) for r in rows] == sorted(funds.items())
        for account, amount in funds.items():
            # held by its payout, or already paid by a payout worker on this database (the
            # session's in-process server runs one)
            b = await client.balance(account)
            assert (b.available_minor, b.posted_minor, b.pending_debit_minor) in (
                (0, amount, amount), (0, 0, 0))
    finally:
        await conn.execute("DELETE FROM payout_schedules WHERE platform_id = $1",
                           platform.platform_id)
        await conn.close()
        for ch in channels:
            await ch.close()
        for p in procs:
            p.terminate()
