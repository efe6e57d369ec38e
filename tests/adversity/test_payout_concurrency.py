"""1,000 concurrent RequestPayout calls against one balance never overdraw it: exactly
floor(balance / amount) succeed, the rest are INSUFFICIENT_FUNDS, balances exact, and the
daily maximum holds under the same race."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest

from clearing.v1 import payout_pb2 as pb
from tests.payout_support import Payouts, party, set_config
from tests.support import details

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

CALLS = 1_000
AMOUNT = 700
FUNDS = 100_000  # 142 payouts of 700, 600 left over
FEE = 5


async def _attempt(payouts: Payouts, account_id: int, amount: int):
    try:
        return await payouts.request(account_id, amount, timeout_s=60.0)
    except grpc.aio.AioRpcError as err:
        return (err.code(), details(err)[0])


async def test_thousand_concurrent_payouts_never_overdraw(channel, client, platform,
                                                         database_url):
    payouts = Payouts(channel, platform.key)
    p = await party(client, payouts, funds=FUNDS)
    await set_config(database_url, platform.platform_id, fee_fixed_minor=FEE,
                     fee_account_id=p.fee)
    results = await asyncio.gather(*(_attempt(payouts, p.account, AMOUNT)
                                     for _ in range(CALLS)))
    won = [r for r in results if not isinstance(r, tuple)]
    lost = Counter(r for r in results if isinstance(r, tuple))
    assert len(won) == FUNDS // AMOUNT == 142
    assert lost == {(grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"): CALLS - 142}
    assert len({w.payout_id for w in won}) == 142
    assert all((w.fee_minor, w.net_amount_minor) == (FEE, AMOUNT - FEE) for w in won)
    b = await client.balance(p.account)
    assert b.available_minor == FUNDS - 142 * AMOUNT == 600
    # held (or, once the worker paid it, posted): never more than the funds
    assert b.posted_minor - b.pending_debit_minor == 600
    assert (await client.verify()).ok


async def test_daily_maximum_holds_under_concurrency(channel, client, platform, database_url):
    payouts = Payouts(channel, platform.key)
    p = await party(client, payouts, funds=FUNDS)
    await set_config(database_url, platform.platform_id, daily_max_minor=10_000)
    results = await asyncio.gather(*(_attempt(payouts, p.account, 1_000) for _ in range(50)))
    won = [r for r in results if not isinstance(r, tuple)]
    lost = Counter(r for r in results if isinstance(r, tuple))
    assert len(won) == 10
    assert lost == {(grpc.StatusCode.RESOURCE_EXHAUSTED, "DAILY_LIMIT_EXCEEDED"): 40}
    assert (await client.balance(p.account)).available_minor == FUNDS - 10_000


async def test_daily_maximum_holds_across_two_server_processes(client, platform, database_url,
                                                              redis_url, redis_prefix):
    """The per-account lock is a PostgreSQL advisory lock too: two processes racing on one
    account still stop exactly at the daily maximum."""
    from tests.support import ServerProcess

    procs = [ServerProcess(database_url, redis_url,
                           extra_env={"CLEARING_REDIS_PREFIX": redis_prefix,
                                      "CLEARING_PAYOUT_WORKER": "0"}) for _ in range(2)]
    channels: list[grpc.aio.Channel] = []
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in procs))
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") for p in procs]
        remotes = [Payouts(ch, platform.key) for ch in channels]
        p = await party(client, remotes[0], funds=FUNDS)
        await set_config(database_url, platform.platform_id, daily_max_minor=20_000)
        for remote in remotes:  # both answer before the race (keys cached, pools warm)
            await remote.call("ListPayouts", pb.ListPayoutsRequest(page_size=1))
        results = await asyncio.gather(*(_attempt(remotes[i % 2], p.account, 100)
                                         for i in range(400)))
        won = [r for r in results if not isinstance(r, tuple)]
        lost = Counter(r for r in results if isinstance(r, tuple))
        assert len(won) == 200
        assert lost == {(grpc.StatusCode.RESOURCE_EXHAUSTED, "DAILY_LIMIT_EXCEEDED"): 200}
        assert (await client.balance(p.account)).available_minor == FUNDS - 20_000
    finally:
        for ch in channels:
            await ch.close()
        for proc in procs:
            proc.kill()
