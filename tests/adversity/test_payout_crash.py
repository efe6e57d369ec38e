"""Crashes of the payout worker at each step (issue 4): after recording an attempt but
before calling the bank, after the bank got the order but before its answer was applied,
after the ledger was posted but before the transfer was marked, and a real `kill -9` of a
server process with bank calls in flight. Each time a restarted worker asks the bank before
anything is resent, and the money is paid and posted exactly once."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace

import pytest

from clearing.clock import Clock
from clearing.dev.bank_sim import BankSimSettings, BankSimulator, BankState
from clearing.payout.claim import claim
from clearing.payout.lifecycle import ledger_request_id
from clearing.payout.settle import Settler
from clearing.v1 import payout_pb2 as pb
from tests.payout_worker_support import (
    FAST, FINAL, balances, books, funded, paid_at_bank, stack, worker_database)
from tests.support import ServerProcess

worker_db = pytest.fixture(scope="module", name="worker_db")(worker_database)

S = pb.BANK_TRANSFER_STATE_SUCCEEDED


async def _queued_payout(s, funds: int = 5_000, amount: int = 1_000):
    p = await funded(s, funds)
    made = await s.ops.request(p.account, amount)
    assert made.state == pb.PAYOUT_STATE_QUEUED
    return p, made


async def _claimed(s, payout_id: int):
    """Run the worker's claim step alone (as a process that dies right after it)."""
    [job] = await claim(s.pool, Clock().now(), FAST, 1)
    assert job.payout_id == payout_id and not job.query_first
    got = await s.ops.get(payout_id)
    assert got.state == pb.PAYOUT_STATE_SUBMITTED
    [t] = got.transfers
    assert (t.state, t.attempt_count) == (pb.BANK_TRANSFER_STATE_SUBMITTED, 1)
    assert [a.state for a in t.attempts] == [pb.BANK_TRANSFER_STATE_SUBMITTED]
    return job


async def _assert_paid_once(s, p, payout_id: int, amount: int, funds: int) -> None:
    done = await s.ops.wait_state(payout_id, FINAL)
    assert (done.state, done.paid_minor) == (pb.PAYOUT_STATE_SUCCEEDED, amount)
    [t] = done.transfers
    assert (t.attempt_count, [a.state for a in t.attempts]) == (1, [S])
    key = f"po{payout_id}-t1-a1"
    assert [b.idempotency_key for b in await books(s.pool, payout_id)] == [key]
    assert [b.amount_minor for b in await paid_at_bank(s.pool, payout_id)] == [amount]
    assert await s.pool.fetchval("SELECT count(*) FROM transfers WHERE request_id = $1",
                                 ledger_request_id(payout_id, "t1:post")) == 1
    assert await balances(s, p.account) == [(funds - amount, funds - amount, 0)]
    v = await s.client.verify()
    assert v.ok and v.chain_ok, v


async def test_crash_after_recording_the_attempt_before_the_bank(worker_db, redis_url,
                                                                 redis_prefix):
    """The bank never got it: the restarted worker queries (NOT_FOUND) after the lease and
    sends the SAME key."""
    async with stack(worker_db, redis_url, redis_prefix, run_worker=False) as s:
        p, made = await _queued_payout(s)
        await _claimed(s, made.payout_id)
        pid, keys = s.platform_id, s.keys
    async with stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys) as s:
        await _assert_paid_once(s, p, made.payout_id, 1_000, 5_000)


async def test_crash_after_the_bank_paid_before_the_answer_was_applied(worker_db, redis_url,
                                                                       redis_prefix):
    """The bank paid (no callback will come); the restarted worker finds it by query."""
    async with stack(worker_db, redis_url, redis_prefix, run_worker=False) as s:
        p, made = await _queued_payout(s)
        job = await _claimed(s, made.payout_id)
        bank = BankSimulator(s.pool, BankSimSettings(callback_delay_ms=600_000), Clock())
        await bank.start()
        answer = await bank.submit(job.order)
        await bank.close()  # dies with the process: its callback is never delivered
        assert answer.state is BankState.SUCCEEDED
        pid, keys = s.platform_id, s.keys
    async with stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys) as s:
        await _assert_paid_once(s, p, made.payout_id, 1_000, 5_000)


async def test_crash_after_the_ledger_post_before_marking(worker_db, redis_url, redis_prefix):
    """The hold was posted but the transfer not yet marked SUCCEEDED: the restarted worker
    queries, posts again with the same request id (answered from the first result, no new
    journal row) and marks it."""
    async with stack(worker_db, redis_url, redis_prefix, run_worker=False) as s:
        p, made = await _queued_payout(s)
        job = await _claimed(s, made.payout_id)
        bank = BankSimulator(s.pool, BankSimSettings(callback_delay_ms=600_000), Clock())
        await bank.start()
        await bank.submit(job.order)
        await bank.close()
        settler = Settler(s.running.payouts, FAST)
        row = await settler._attempt(job.order.idempotency_key)
        await settler._post_ledger(row)  # then the process dies
        assert await balances(s, p.account) == [(4_000, 4_000, 0)]
        still = await s.ops.get(made.payout_id)
        assert (still.state, still.paid_minor) == (pb.PAYOUT_STATE_SUBMITTED, 0)
        pid, keys = s.platform_id, s.keys
    async with stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys) as s:
        await _assert_paid_once(s, p, made.payout_id, 1_000, 5_000)


async def test_kill_9_with_bank_calls_in_flight(worker_db, redis_url, redis_prefix):
    """A real server process with slow bank calls is killed while they are in flight; a new
    process settles every payout, each paid once."""
    count, amount, funds = 6, 1_000, 10_000
    async with stack(worker_db, redis_url, redis_prefix, run_worker=False) as s:
        p = await funded(s, funds)
        pid, keys = s.platform_id, s.keys
    env = {"CLEARING_BANK_SIM_LATENCY_MS": "1500", "CLEARING_BANK_SIM_CALLBACK_DELAY_MS": "50",
           "CLEARING_PAYOUT_POLL_INTERVAL_MS": "20", "CLEARING_PAYOUT_SUBMIT_TIMEOUT_MS": "5000",
           "CLEARING_PAYOUT_STUCK_AFTER_MS": "6000", "CLEARING_PAYOUT_RETRY_BACKOFF_MS": "20"}
    proc = ServerProcess(worker_db, redis_url, extra_env=env).start()
    try:
        async with stack(worker_db, redis_url, redis_prefix, run_worker=False,
                         platform_id=pid, keys=keys) as s:
            made = [await s.ops.request(p.account, amount) for _ in range(count)]
            ids = [m.payout_id for m in made]

            async def all_submitted() -> bool:
                n = await s.pool.fetchval(
                    "SELECT count(*) FROM bank_transfer_attempts a JOIN bank_transfers t "
                    "USING (bank_transfer_id) WHERE t.payout_id = ANY($1::bigint[])", ids)
                return n == count

            for _ in range(200):
                if await all_submitted():
                    break
                await asyncio.sleep(0.02)
            assert await all_submitted()
            await asyncio.sleep(0.3)  # some calls still in transit to the bank
    finally:
        proc.kill()
    async with stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys) as s:
        started = dt.datetime.now(dt.timezone.utc)
        for m in made:
            done = await s.ops.wait_state(m.payout_id, FINAL, timeout_s=30.0)
            assert (done.state, done.paid_minor) == (pb.PAYOUT_STATE_SUCCEEDED, amount)
            assert done.transfers[0].attempt_count == 1
            assert len(await paid_at_bank(s.pool, m.payout_id)) == 1
            assert await s.pool.fetchval(
                "SELECT count(*) FROM transfers WHERE request_id = $1",
                ledger_request_id(m.payout_id, "t1:post")) == 1
        assert await balances(s, p.account) == [(funds - count * amount,) * 2 + (0,)]
        v = await s.client.verify()
        assert v.ok and v.chain_ok, v
        assert (dt.datetime.now(dt.timezone.utc) - started).total_seconds() < 30


async def test_crash_during_rejection_is_finished_by_the_repair_sweep(worker_db, redis_url,
                                                                      redis_prefix):
    """fail_payout committed FAILED but died before voiding the hold: a worker's repair
    sweep (at start) releases it, once."""
    async with stack(worker_db, redis_url, redis_prefix, run_worker=False) as s:
        p = await funded(s, 5_000, fee_fixed_minor=4, review_threshold_minor=1_000)
        big = await s.ops.request(p.account, 2_004)
        assert big.state == pb.PAYOUT_STATE_PENDING_REVIEW
        async with s.pool.acquire() as conn, conn.transaction():  # fail_payout's first step
            await conn.execute("UPDATE bank_transfers SET state = 5 WHERE payout_id = $1",
                               big.payout_id)
            await conn.execute("UPDATE payouts SET state = 6, failure_reason = 'REJECTED' "
                               "WHERE payout_id = $1", big.payout_id)
        assert await balances(s, p.account) == [(5_000, 2_996, 2_004)]
        pid, keys = s.platform_id, s.keys
    async with stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys) as s:
        async def released() -> bool:
            return await balances(s, p.account, p.fee) == [(5_000, 5_000, 0), (0, 0, 0)]
        for _ in range(100):
            if await released():
                break
            await asyncio.sleep(0.05)
        assert await released()
        for what in ("void", "fee:void"):
            assert await s.pool.fetchval(
                "SELECT count(*) FROM transfers WHERE request_id = $1",
                ledger_request_id(big.payout_id, what)) == 1


async def test_stop_abandons_in_flight_calls_safely(worker_db, redis_url, redis_prefix):
    """stop() with a grace shorter than the bank's latency abandons the call: the attempt
    stays SUBMITTED, and a worker started again queries it after the lease, then sends the
    same key (the abandoned call never reached the bank)."""
    bank = BankSimSettings(latency_ms=1_000)  # 0.5 .. 1.5 s per call
    worker_settings = replace(FAST, submit_timeout_ms=3_000, stuck_after_ms=3_500)
    async with stack(worker_db, redis_url, redis_prefix, bank=bank,
                     worker=worker_settings) as s:
        p, made = await _queued_payout(s)
        worker = s.running.payout_worker

        async def submitted() -> bool:
            return (await s.ops.get(made.payout_id)).state == pb.PAYOUT_STATE_SUBMITTED

        for _ in range(100):
            if await submitted():
                break
            await asyncio.sleep(0.02)
        await worker.stop(grace_s=0.05)
        assert worker.in_flight == 0
        left = await s.ops.get(made.payout_id)
        assert [a.state for a in left.transfers[0].attempts] == [
            pb.BANK_TRANSFER_STATE_SUBMITTED]
        assert await books(s.pool, made.payout_id) == []
        worker.start()
        done = await s.ops.wait_state(made.payout_id, FINAL, timeout_s=20.0)
        assert (done.state, done.paid_minor) == (pb.PAYOUT_STATE_SUCCEEDED, 1_000)
        assert done.transfers[0].attempt_count == 1
        assert len(await paid_at_bank(s.pool, made.payout_id)) == 1
        assert await balances(s, p.account) == [(4_000, 4_000, 0)]
