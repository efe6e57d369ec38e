"""The payout worker through a real server, PostgreSQL and the bank simulator: success,
retries, manual review then approve or reject, timeouts resolved by query, duplicate
callbacks, results only by query. Every amount is asserted exactly; the bank's own books
must agree with the ledger (nothing paid twice)."""

from __future__ import annotations

import asyncpg
import pytest
from prometheus_client import REGISTRY

from clearing.dev.bank_sim import BankSimSettings, BankState, TimeoutKind
from clearing.payout.lifecycle import ledger_request_id
from clearing.v1 import payout_pb2 as pb
from tests.payout_worker_support import (
    FINAL, balances, books, funded, paid_at_bank, seed_where, stack, worker_database)

worker_db = pytest.fixture(scope="module", name="worker_db")(worker_database)

S = pb.BANK_TRANSFER_STATE_SUCCEEDED
F = pb.BANK_TRANSFER_STATE_FAILED


async def _ledger_rows(pool: asyncpg.Pool, payout_id: int, what: str) -> int:
    """How many journal rows a payout's posting `what` wrote (a replay writes none)."""
    return await pool.fetchval("SELECT count(*) FROM transfers WHERE request_id = $1",
                               ledger_request_id(payout_id, what))


async def _verify_clean(s) -> None:
    v = await s.client.verify()
    assert v.ok and v.chain_ok and not v.mismatched_account_ids, v


async def _queued(dsn, redis_url, redis_prefix, *, funds: int, amounts: list[int],
                  fee: int = 0, transfer_max: int = 50_000_000):
    """A platform with payouts requested through RequestPayout while no worker runs: they
    wait QUEUED. Returns (platform_id, keys, party, payouts)."""
    async with stack(dsn, redis_url, redis_prefix, run_worker=False) as s:
        p = await funded(s, funds, fee_fixed_minor=fee, bank_transfer_max_minor=transfer_max)
        made = [await s.ops.request(p.account, a) for a in amounts]
        assert all(m.state == pb.PAYOUT_STATE_QUEUED for m in made)
        return s.platform_id, s.keys, p, made


async def test_success_posts_hold_and_fee_once(worker_db, redis_url, redis_prefix):
    async with stack(worker_db, redis_url, redis_prefix) as s:
        p = await funded(s, 10_000, fee_fixed_minor=4)
        payout = await s.ops.request(p.account, 990, memo="withdrawal")
        done = await s.ops.wait_state(payout.payout_id, FINAL)
        assert done.state == pb.PAYOUT_STATE_SUCCEEDED
        assert (done.amount_minor, done.fee_minor, done.net_amount_minor, done.paid_minor) == (
            990, 4, 986, 986)
        assert done.HasField("finish_time")
        [t] = done.transfers
        assert (t.state, t.attempt_count, t.amount_minor) == (S, 1, 986)
        assert t.idempotency_key == f"po{payout.payout_id}-t1-a1"
        assert [a.state for a in t.attempts] == [S]
        [paid] = await paid_at_bank(s.pool, payout.payout_id)
        assert (paid.amount_minor, paid.masked_account) == (986, "6225****1234")
        assert await balances(s, p.account, p.fee) == [(9_010, 9_010, 0), (4, 4, 0)]
        assert (await s.client.balance(p.custodial)).posted_minor == -10_000 + 986
        assert await _ledger_rows(s.pool, payout.payout_id, "t1:post") == 1
        assert await _ledger_rows(s.pool, payout.payout_id, "fee:post") == 1
        await _verify_clean(s)


async def test_failure_is_retried_with_a_new_key_then_succeeds(worker_db, redis_url,
                                                                redis_prefix):
    pid, keys, p, [made] = await _queued(worker_db, redis_url, redis_prefix, funds=5_000,
                                         amounts=[1_000])
    k = f"po{made.payout_id}-t1-a"
    base = BankSimSettings(failure_rate=0.5)
    seed = seed_where(base, {k + "1": BankState.FAILED, k + "2": BankState.FAILED,
                             k + "3": BankState.SUCCEEDED})
    before = {r: _bank_calls("submit", r) for r in ("failed", "succeeded")}
    async with stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys,
                     bank=BankSimSettings(failure_rate=0.5, seed=seed)) as s:
        done = await s.ops.wait_state(made.payout_id, FINAL)
        assert (done.state, done.paid_minor) == (pb.PAYOUT_STATE_SUCCEEDED, 1_000)
        [t] = done.transfers
        assert [a.state for a in t.attempts] == [F, F, S]
        # the metrics count them (other workers of this test process may add their own)
        assert _bank_calls("submit", "failed") >= before["failed"] + 2
        assert _bank_calls("submit", "succeeded") >= before["succeeded"] + 1
        assert [a.idempotency_key for a in t.attempts] == [k + "1", k + "2", k + "3"]
        assert t.attempts[0].failure_code in ("ACCOUNT_FROZEN_AT_BANK", "BANK_REJECTED",
                                              "ACCOUNT_CLOSED")
        assert [b.idempotency_key for b in await paid_at_bank(s.pool, made.payout_id)] == [
            k + "3"]
        assert await balances(s, p.account) == [(4_000, 4_000, 0)]
        await _verify_clean(s)


async def _exhausted(worker_db, redis_url, redis_prefix, *, funds: int, amount: int,
                     fee: int = 0):
    """A payout whose 4 attempts all failed: MANUAL_REVIEW, funds still held."""
    async with stack(worker_db, redis_url, redis_prefix,
                     bank=BankSimSettings(failure_rate=1.0)) as s:
        p = await funded(s, funds, fee_fixed_minor=fee)
        payout = await s.ops.request(p.account, amount)
        review = await s.ops.wait_state(payout.payout_id, FINAL)
        return s.platform_id, s.keys, p, review


async def test_retries_exhausted_go_to_manual_review_then_approve_pays(worker_db, redis_url,
                                                                       redis_prefix):
    pid, keys, p, review = await _exhausted(worker_db, redis_url, redis_prefix, funds=5_000,
                                            amount=1_004, fee=4)
    assert review.state == pb.PAYOUT_STATE_MANUAL_REVIEW
    assert review.failure_reason == "BANK_RETRIES_EXHAUSTED"
    assert review.paid_minor == 0
    [t] = review.transfers
    assert (t.state, t.attempt_count) == (F, 4)
    assert [a.state for a in t.attempts] == [F, F, F, F]
    assert len({a.idempotency_key for a in t.attempts}) == 4
    async with stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys) as s:
        # funds stay held: nothing paid, nothing released
        assert await balances(s, p.account, p.fee) == [(5_000, 3_996, 1_004), (0, 0, 0)]
        assert await paid_at_bank(s.pool, review.payout_id) == []
        approved = await s.approver.approve(review.payout_id, reason="bank fixed")
        assert approved.state in (pb.PAYOUT_STATE_SUBMITTED, pb.PAYOUT_STATE_SUCCEEDED)
        done = await s.ops.wait_state(review.payout_id, FINAL)
        assert (done.state, done.paid_minor, done.failure_reason) == (
            pb.PAYOUT_STATE_SUCCEEDED, 1_000, "")
        [t] = done.transfers
        assert (t.state, t.attempt_count) == (S, 5)
        assert [a.state for a in t.attempts] == [F, F, F, F, S]
        [paid] = await paid_at_bank(s.pool, review.payout_id)
        assert (paid.idempotency_key, paid.amount_minor) == (
            f"po{review.payout_id}-t1-a5", 1_000)
        assert await balances(s, p.account, p.fee) == [(3_996, 3_996, 0), (4, 4, 0)]
        await _verify_clean(s)


async def test_retries_exhausted_then_reject_releases_the_funds(worker_db, redis_url,
                                                                redis_prefix):
    pid, keys, p, review = await _exhausted(worker_db, redis_url, redis_prefix, funds=5_000,
                                            amount=1_004, fee=4)
    assert review.state == pb.PAYOUT_STATE_MANUAL_REVIEW
    async with stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys) as s:
        rejected = await s.approver.reject(review.payout_id, reason="account closed")
        assert (rejected.state, rejected.failure_reason, rejected.paid_minor) == (
            pb.PAYOUT_STATE_FAILED, "REJECTED", 0)
        assert rejected.HasField("finish_time")
        assert [t.state for t in rejected.transfers] == [F]
        assert await balances(s, p.account, p.fee) == [(5_000, 5_000, 0), (0, 0, 0)]
        assert await _ledger_rows(s.pool, review.payout_id, "void") == 1
        assert await _ledger_rows(s.pool, review.payout_id, "fee:void") == 1
        assert await paid_at_bank(s.pool, review.payout_id) == []
        await _verify_clean(s)


async def test_reject_after_a_partial_payment_voids_only_the_rest(worker_db, redis_url,
                                                                  redis_prefix):
    """Net 1,000 cut into 300+300+300+100; transfer 2 fails 4 times, the others are paid:
    MANUAL_REVIEW with 700 paid; rejecting voids the 300 left, the fee stays earned."""
    pid, keys, p, [made] = await _queued(worker_db, redis_url, redis_prefix, funds=5_000,
                                         amounts=[1_004], fee=4, transfer_max=300)
    k = f"po{made.payout_id}-t"
    wanted = {f"{k}2-a{n}": BankState.FAILED for n in (1, 2, 3, 4)}
    wanted.update({f"{k}{seq}-a1": BankState.SUCCEEDED for seq in (1, 3, 4)})
    seed = seed_where(BankSimSettings(failure_rate=0.5), wanted)
    async with stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys,
                     bank=BankSimSettings(failure_rate=0.5, seed=seed)) as s:
        review = await s.ops.wait_state(made.payout_id, FINAL)
        assert (review.state, review.paid_minor) == (pb.PAYOUT_STATE_MANUAL_REVIEW, 700)
        assert [(t.amount_minor, t.state, t.attempt_count) for t in review.transfers] == [
            (300, S, 1), (300, F, 4), (300, S, 1), (100, S, 1)]
        assert await balances(s, p.account, p.fee) == [(4_296, 3_996, 300), (4, 4, 0)]
        rejected = await s.approver.reject(made.payout_id, reason="closed")
        assert (rejected.state, rejected.paid_minor) == (pb.PAYOUT_STATE_FAILED, 700)
        assert await balances(s, p.account, p.fee) == [(4_296, 4_296, 0), (4, 4, 0)]
        assert await _ledger_rows(s.pool, made.payout_id, "fee:void") == 0
        assert sorted(b.amount_minor for b in await paid_at_bank(s.pool, made.payout_id)) == [
            100, 300, 300]
        await _verify_clean(s)


async def test_timeout_where_the_bank_paid_is_found_by_query_and_paid_once(
        worker_db, redis_url, redis_prefix):
    """The submit's answer is lost (the bank recorded and paid it): the worker asks the bank
    with the same key instead of resending, and posts once. No callback in the test's
    time: the query is what finds it."""
    pid, keys, p, [made] = await _queued(worker_db, redis_url, redis_prefix, funds=5_000,
                                         amounts=[1_000])
    base = BankSimSettings(timeout_rate=0.5, lost_answer_share=1.0, callback_delay_ms=600_000)
    key = f"po{made.payout_id}-t1-a1"
    seed = seed_where(base, {key: BankState.SUCCEEDED},
                      (("submit", TimeoutKind.ANSWER_LOST), ("query", TimeoutKind.NONE)))
    async with stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys,
                     bank=BankSimSettings(**{**base.__dict__, "seed": seed})) as s:
        done = await s.ops.wait_state(made.payout_id, FINAL)
        assert (done.state, done.paid_minor) == (pb.PAYOUT_STATE_SUCCEEDED, 1_000)
        [t] = done.transfers
        assert (t.attempt_count, [a.state for a in t.attempts]) == (1, [S])
        assert [b.idempotency_key for b in await books(s.pool, made.payout_id)] == [key]
        assert await _ledger_rows(s.pool, made.payout_id, "t1:post") == 1
        assert await balances(s, p.account) == [(4_000, 4_000, 0)]
        await _verify_clean(s)


async def test_timeout_before_the_bank_got_it_resends_the_same_key(worker_db, redis_url,
                                                                   redis_prefix):
    """The submit never reached the bank: the query answers NOT_FOUND and the order is sent
    again with the SAME key (one attempt, one record at the bank)."""
    pid, keys, p, [made] = await _queued(worker_db, redis_url, redis_prefix, funds=5_000,
                                         amounts=[1_000])
    base = BankSimSettings(timeout_rate=0.5, lost_answer_share=0.0)
    key = f"po{made.payout_id}-t1-a1"
    seed = seed_where(base, {key: BankState.SUCCEEDED},
                      (("submit", TimeoutKind.NOT_REACHED), ("query", TimeoutKind.NONE),
                       ("submit", TimeoutKind.NONE)))
    async with stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys,
                     bank=BankSimSettings(**{**base.__dict__, "seed": seed})) as s:
        done = await s.ops.wait_state(made.payout_id, FINAL)
        assert (done.state, done.paid_minor) == (pb.PAYOUT_STATE_SUCCEEDED, 1_000)
        [t] = done.transfers
        assert (t.attempt_count, t.idempotency_key) == (1, key)
        assert [b.idempotency_key for b in await paid_at_bank(s.pool, made.payout_id)] == [key]
        assert await balances(s, p.account) == [(4_000, 4_000, 0)]


async def test_duplicate_callbacks_apply_once(worker_db, redis_url, redis_prefix):
    """Every order answers PROCESSING and its result comes by callback, twice; a late third
    delivery of the result (and of a stale FAILED) changes nothing either."""
    bank = BankSimSettings(processing_rate=1.0, duplicate_callback_rate=1.0,
                           callback_delay_ms=50)
    async with stack(worker_db, redis_url, redis_prefix, bank=bank) as s:
        p = await funded(s, 10_000, fee_fixed_minor=4)
        made = [await s.ops.request(p.account, 1_004) for _ in range(3)]
        for m in made:
            done = await s.ops.wait_state(m.payout_id, FINAL)
            assert (done.state, done.paid_minor) == (pb.PAYOUT_STATE_SUCCEEDED, 1_000)
        from clearing.payout.bank import BankResult
        key = f"po{made[0].payout_id}-t1-a1"
        settler = s.running.payout_worker.settler
        await settler.apply(BankResult(key, BankState.SUCCEEDED, "again"))
        await settler.apply(BankResult(key, BankState.FAILED, "", "BANK_REJECTED", "late"))
        for m in made:
            again = await s.ops.get(m.payout_id)
            assert (again.state, again.paid_minor) == (pb.PAYOUT_STATE_SUCCEEDED, 1_000)
            assert [a.state for a in again.transfers[0].attempts] == [S]
            assert await _ledger_rows(s.pool, m.payout_id, "t1:post") == 1
            assert len(await paid_at_bank(s.pool, m.payout_id)) == 1
        assert await balances(s, p.account, p.fee) == [(6_988, 6_988, 0), (12, 12, 0)]
        await _verify_clean(s)


async def test_result_only_by_query_after_stuck_after(worker_db, redis_url, redis_prefix):
    """PROCESSING and never a callback: the worker queries once the attempt has been
    SUBMITTED for stuck_after_ms, and settles it then."""
    bank = BankSimSettings(query_only_rate=1.0, callback_delay_ms=100)
    async with stack(worker_db, redis_url, redis_prefix, bank=bank) as s:
        p = await funded(s, 5_000)
        made = await s.ops.request(p.account, 1_000)
        waiting = await s.ops.wait_state(made.payout_id, (pb.PAYOUT_STATE_SUBMITTED,))
        done = await s.ops.wait_state(made.payout_id, FINAL)
        assert (done.state, done.paid_minor) == (pb.PAYOUT_STATE_SUCCEEDED, 1_000)
        assert (done.finish_time.ToDatetime() - waiting.create_time.ToDatetime()
                ).total_seconds() >= 1.0  # FAST.stuck_after_ms is 1.5 s
        [paid] = await paid_at_bank(s.pool, made.payout_id)
        assert paid.result_only_by_query
        assert await balances(s, p.account) == [(4_000, 4_000, 0)]


async def test_review_payout_waits_then_reject_releases_hold_and_fee(worker_db, redis_url,
                                                                     redis_prefix):
    async with stack(worker_db, redis_url, redis_prefix) as s:
        p = await funded(s, 5_000, fee_fixed_minor=4, review_threshold_minor=1_000)
        big = await s.ops.request(p.account, 2_004)
        assert big.state == pb.PAYOUT_STATE_PENDING_REVIEW
        small = await s.ops.request(p.account, 504)
        assert (await s.ops.wait_state(small.payout_id, FINAL)).state == \
            pb.PAYOUT_STATE_SUCCEEDED
        # the worker never touches a payout under review
        waiting = await s.ops.get(big.payout_id)
        assert waiting.state == pb.PAYOUT_STATE_PENDING_REVIEW
        assert [t.attempt_count for t in waiting.transfers] == [0]
        rejected = await s.approver.reject(big.payout_id, reason="too big")
        assert (rejected.state, rejected.failure_reason) == (pb.PAYOUT_STATE_FAILED,
                                                             "REJECTED")
        assert await books(s.pool, big.payout_id) == []
        assert await balances(s, p.account, p.fee) == [(4_496, 4_496, 0), (4, 4, 0)]
        await _verify_clean(s)


async def test_review_payout_approved_is_paid(worker_db, redis_url, redis_prefix):
    async with stack(worker_db, redis_url, redis_prefix) as s:
        p = await funded(s, 5_000, review_threshold_minor=1_000)
        big = await s.ops.request(p.account, 2_000)
        assert big.state == pb.PAYOUT_STATE_PENDING_REVIEW
        await s.approver.approve(big.payout_id)
        done = await s.ops.wait_state(big.payout_id, FINAL)
        assert (done.state, done.paid_minor) == (pb.PAYOUT_STATE_SUCCEEDED, 2_000)
        assert await balances(s, p.account) == [(3_000, 3_000, 0)]


def test_worker_settings_from_env():
    from clearing.config import WorkerSettings
    from clearing.payout.settle import retry_delay_ms
    s = WorkerSettings.from_env({"CLEARING_PAYOUT_POLL_INTERVAL_MS": "5",
                                 "CLEARING_PAYOUT_CLAIM_BATCH_MAX": "7",
                                 "CLEARING_PAYOUT_SUBMIT_TIMEOUT_MS": "100",
                                 "CLEARING_PAYOUT_STUCK_AFTER_MS": "300",
                                 "CLEARING_PAYOUT_RETRY_BACKOFF_MS": "10",
                                 "CLEARING_PAYOUT_RETRIES_MAX": "2",
                                 "CLEARING_PAYOUT_BANK_CALLS_MAX": "3"})
    assert s == WorkerSettings(5, 7, 100, 300, 10, 2, 3)
    assert [retry_delay_ms(s, n) for n in (1, 2, 3)] == [10, 20, 40]
    assert WorkerSettings.from_env({}) == WorkerSettings()
    with pytest.raises(SystemExit):
        WorkerSettings.from_env({"CLEARING_PAYOUT_STUCK_AFTER_MS": "100",
                                 "CLEARING_PAYOUT_SUBMIT_TIMEOUT_MS": "100"})
    with pytest.raises(SystemExit):
        WorkerSettings.from_env({"CLEARING_PAYOUT_CLAIM_BATCH_MAX": "0"})


def _bank_calls(call: str, result: str) -> float:
    return REGISTRY.get_sample_value("clearing_bank_calls_total",
                                     {"call": call, "result": result}) or 0.0

