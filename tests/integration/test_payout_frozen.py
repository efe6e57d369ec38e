"""A frozen account's payout never reaches the bank: ApprovePayout refuses it (it stays in
review, its funds held), and the worker reads the account's status right before every bank
call (each send and each resend), so a freeze between the claim and the call sends nothing
and the payout waits in MANUAL_REVIEW. What the bank had already accepted is booked. Through
a real server, PostgreSQL and the bank simulator; the bank's own books are the witness.

The "between claim and bank call" tests run the worker's own steps by hand, in order (no
worker loop runs on their server): `claim` (the transfer is claimed, its attempt recorded
SUBMITTED), then the freeze through the API, then `PayoutWorker.work` on the claimed job."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt

import grpc
import pytest

from clearing.clock import Clock
from clearing.dev.bank_sim import BankSimSettings, BankSimulator, BankState, TimeoutKind
from clearing.payout.claim import claim
from clearing.payout.worker import PayoutWorker
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import payout_pb2 as pb
from tests.payout_worker_support import (FAST, FINAL, balances, books, funded, paid_at_bank,
                                         seed_where, stack, worker_database)
from tests.support import details, rid

pytestmark = [pytest.mark.timeout(120)]

worker_db = pytest.fixture(scope="module", name="worker_db")(worker_database)

S = pb.BANK_TRANSFER_STATE_SUCCEEDED
F = pb.BANK_TRANSFER_STATE_FAILED
U = pb.BANK_TRANSFER_STATE_UNKNOWN


async def _freeze(s, account_id: int) -> None:
    r = await s.client.call("FreezeAccount", lpb.FreezeAccountRequest(
        request_id=rid(), account_id=account_id, reason="court order"))
    assert r.account.status == lpb.ACCOUNT_STATUS_FROZEN


async def _unfreeze(s, account_id: int) -> None:
    r = await s.client.call("UnfreezeAccount", lpb.UnfreezeAccountRequest(
        request_id=rid(), account_id=account_id, reason="lifted"))
    assert r.account.status == lpb.ACCOUNT_STATUS_ACTIVE


async def _refused(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), details(err.value)[0]


async def _verify_clean(s) -> None:
    v = await s.client.verify()
    assert v.ok and v.chain_ok and not v.mismatched_account_ids, v


@contextlib.asynccontextmanager
async def _by_hand(s, bank: BankSimSettings = BankSimSettings()):
    """The worker's parts on this server, with no loop of their own: (worker, claim())."""
    sim = BankSimulator(s.pool, bank, Clock())
    await sim.start()
    worker = PayoutWorker(s.running.payouts, sim, FAST)

    async def claimed(ahead_ms: int = 0):
        now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(milliseconds=ahead_ms)
        return sorted(await claim(s.pool, now, FAST, FAST.claim_batch_max),
                      key=lambda j: j.order.idempotency_key)

    try:
        yield worker, claimed
    finally:
        await sim.close()


async def test_approve_of_a_payout_whose_account_froze_in_review_is_refused(
        worker_db, redis_url, redis_prefix):
    async with stack(worker_db, redis_url, redis_prefix) as s:
        p = await funded(s, 5_000, fee_fixed_minor=4, review_threshold_minor=1_000)
        a = await s.ops.request(p.account, 2_004)
        b = await s.ops.request(p.account, 1_504)
        assert (a.state, b.state) == (pb.PAYOUT_STATE_PENDING_REVIEW,) * 2
        await _freeze(s, p.account)
        assert await _refused(s.approver.approve(a.payout_id)) == (
            grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_FROZEN")
        waiting = await s.ops.get(a.payout_id)
        assert (waiting.state, waiting.review_reason, waiting.paid_minor) == (
            pb.PAYOUT_STATE_PENDING_REVIEW, "", 0)
        assert [t.attempt_count for t in waiting.transfers] == [0]
        # both still held: 5,000 - 2,004 - 1,504 available
        assert await balances(s, p.account, p.fee) == [(5_000, 1_492, 3_508), (0, 0, 0)]
        # a rejection moves no money out: allowed on the frozen account
        rejected = await s.approver.reject(b.payout_id, reason="frozen")
        assert (rejected.state, rejected.failure_reason) == (pb.PAYOUT_STATE_FAILED,
                                                             "REJECTED")
        assert await balances(s, p.account, p.fee) == [(5_000, 2_996, 2_004), (0, 0, 0)]
        assert await books(s.pool, a.payout_id) == []
        assert (await s.ops.get(a.payout_id)).state == pb.PAYOUT_STATE_PENDING_REVIEW
        await _unfreeze(s, p.account)
        await s.approver.approve(a.payout_id, reason="cleared")
        done = await s.ops.wait_state(a.payout_id, FINAL)
        assert (done.state, done.paid_minor) == (pb.PAYOUT_STATE_SUCCEEDED, 2_000)
        [paid] = await paid_at_bank(s.pool, a.payout_id)
        assert paid.amount_minor == 2_000
        assert await balances(s, p.account, p.fee) == [(2_996, 2_996, 0), (4, 4, 0)]
        assert (await s.client.balance(p.custodial)).posted_minor == -5_000 + 2_000
        await _verify_clean(s)


async def test_queued_payout_of_an_account_frozen_before_the_send_waits_in_manual_review(
        worker_db, redis_url, redis_prefix):
    async with stack(worker_db, redis_url, redis_prefix, run_worker=False) as s:
        p = await funded(s, 5_000, fee_fixed_minor=4)
        made = await s.ops.request(p.account, 1_004)
        assert made.state == pb.PAYOUT_STATE_QUEUED
        await _freeze(s, p.account)
        pid, keys = s.platform_id, s.keys
    async with stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys) as s:
        review = await s.ops.wait_state(made.payout_id, FINAL)
        assert (review.state, review.failure_reason, review.paid_minor) == (
            pb.PAYOUT_STATE_MANUAL_REVIEW, "ACCOUNT_FROZEN", 0)
        [t] = review.transfers
        key = f"po{made.payout_id}-t1-a1"
        assert (t.state, t.attempt_count, t.idempotency_key) == (F, 1, key)
        # never sent, yet the key is kept (in doubt, not FAILED): no new key without the
        # bank's FAILED
        assert [(a.state, a.failure_code) for a in t.attempts] == [(U, "ACCOUNT_FROZEN")]
        assert await books(s.pool, made.payout_id) == []  # nothing reached the bank
        assert await balances(s, p.account, p.fee) == [(5_000, 3_996, 1_004), (0, 0, 0)]
        await _verify_clean(s)
        # still frozen: the approver cannot send it either; it stays in review
        assert await _refused(s.approver.approve(made.payout_id)) == (
            grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_FROZEN")
        assert (await s.ops.get(made.payout_id)).state == pb.PAYOUT_STATE_MANUAL_REVIEW
        await _unfreeze(s, p.account)
        await s.approver.approve(made.payout_id, reason="cleared")
        done = await s.ops.wait_state(made.payout_id, FINAL)
        assert (done.state, done.paid_minor, done.failure_reason) == (
            pb.PAYOUT_STATE_SUCCEEDED, 1_000, "")
        [t] = done.transfers
        # the kept key was queried (NOT_FOUND), then sent: the same attempt, now paid
        assert (t.attempt_count, [(a.idempotency_key, a.state) for a in t.attempts]) == (
            1, [(key, S)])
        assert [(b.idempotency_key, b.paid) for b in await books(s.pool, made.payout_id)] == [
            (key, True)]
        assert await balances(s, p.account, p.fee) == [(3_996, 3_996, 0), (4, 4, 0)]
        await _verify_clean(s)


async def test_freeze_between_claim_and_bank_call_sends_nothing(worker_db, redis_url,
                                                               redis_prefix):
    """Three bank transfers claimed at once; the first is sent and paid, then the account
    is frozen: the other two, claimed already, are never sent."""
    async with stack(worker_db, redis_url, redis_prefix, run_worker=False) as s:
        p = await funded(s, 200_000, fee_fixed_minor=4, bank_transfer_max_minor=40_000)
        made = await s.ops.request(p.account, 100_004)
        assert [t.amount_minor for t in made.transfers] == [40_000, 40_000, 20_000]
        async with _by_hand(s) as (worker, claimed):
            jobs = await claimed()
            assert [j.order.idempotency_key for j in jobs] == [
                f"po{made.payout_id}-t{n}-a1" for n in (1, 2, 3)]
            claimed_now = await s.ops.get(made.payout_id)
            assert claimed_now.state == pb.PAYOUT_STATE_SUBMITTED
            assert [a.state for t in claimed_now.transfers for a in t.attempts] == [
                pb.BANK_TRANSFER_STATE_SUBMITTED] * 3
            await worker.work(jobs[0])
            await _freeze(s, p.account)
            for job in jobs[1:]:
                await worker.work(job)
        review = await s.ops.get(made.payout_id)
        assert (review.state, review.failure_reason, review.paid_minor) == (
            pb.PAYOUT_STATE_MANUAL_REVIEW, "ACCOUNT_FROZEN", 40_000)
        assert [(t.state, [a.failure_code for a in t.attempts]) for t in review.transfers] == [
            (S, [""]), (F, ["ACCOUNT_FROZEN"]), (F, ["ACCOUNT_FROZEN"])]
        assert [(b.idempotency_key, b.amount_minor, b.paid)
                for b in await books(s.pool, made.payout_id)] == [
            (f"po{made.payout_id}-t1-a1", 40_000, True)]
        # the first slice and the fee are posted; the other 60,000 stay held
        assert await balances(s, p.account, p.fee) == [(159_996, 99_996, 60_000), (4, 4, 0)]
        assert (await s.client.balance(p.custodial)).posted_minor == -200_000 + 40_000
        await _verify_clean(s)
        # rejected while frozen: the rest goes back to the account (nothing leaves it)
        rejected = await s.approver.reject(made.payout_id, reason="frozen")
        assert (rejected.state, rejected.paid_minor) == (pb.PAYOUT_STATE_FAILED, 40_000)
        assert await balances(s, p.account, p.fee) == [(159_996, 159_996, 0), (4, 4, 0)]
        await _verify_clean(s)


async def _blocked_resend(s):
    """A payout of 1,000 whose first submit never reached the bank (timeout); the account
    is then frozen; the query answers NOT_FOUND, and the resend with the same key is not
    made. Returns (the account's party, the payout, the claimed job of the resend)."""
    p = await funded(s, 5_000)
    made = await s.ops.request(p.account, 1_000)
    key = f"po{made.payout_id}-t1-a1"
    base = BankSimSettings(timeout_rate=0.5, lost_answer_share=0.0)
    seed = seed_where(base, {key: BankState.SUCCEEDED},
                      (("submit", TimeoutKind.NOT_REACHED), ("query", TimeoutKind.NONE)))
    async with _by_hand(s, BankSimSettings(**{**base.__dict__, "seed": seed})) as (
            worker, claimed):
        [job] = await claimed()
        await worker.work(job)  # times out before the bank
        [t] = (await s.ops.get(made.payout_id)).transfers
        assert t.state == pb.BANK_TRANSFER_STATE_UNKNOWN
        await _freeze(s, p.account)
        [again] = await claimed(ahead_ms=FAST.retry_backoff_ms + 1_000)
        assert (again.query_first, again.order.idempotency_key) == (True, key)
        await worker.work(again)
    review = await s.ops.get(made.payout_id)
    assert (review.state, review.failure_reason) == (pb.PAYOUT_STATE_MANUAL_REVIEW,
                                                     "ACCOUNT_FROZEN")
    [t] = review.transfers
    # the transfer is out of flight (FAILED), its attempt still in doubt with its key kept
    assert (t.state, t.attempt_count, t.idempotency_key) == (F, 1, key)
    assert [(a.idempotency_key, a.state, a.failure_code) for a in t.attempts] == [
        (key, U, "ACCOUNT_FROZEN")]
    assert await balances(s, p.account) == [(5_000, 4_000, 1_000)]
    await _verify_clean(s)
    return p, made, again


async def _approve_and_resume(s, p, made, key: str) -> None:
    """Unfreeze, approve: the transfer is back in doubt (UNKNOWN, the same key), and the
    worker's next round (by hand, a fault-free bank) queries that key first."""
    await _unfreeze(s, p.account)
    approved = await s.approver.approve(made.payout_id, reason="cleared")
    assert approved.state == pb.PAYOUT_STATE_SUBMITTED
    [t] = approved.transfers
    assert (t.state, t.attempt_count, t.idempotency_key) == (U, 1, key)
    assert [(a.state, a.failure_code) for a in t.attempts] == [(U, "")]
    async with _by_hand(s) as (worker, claimed):
        [job] = await claimed()
        assert (job.query_first, job.order.idempotency_key) == (True, key)
        await worker.work(job)


async def _paid_once(s, p, made, key: str) -> None:
    done = await s.ops.get(made.payout_id)
    assert (done.state, done.paid_minor, done.failure_reason) == (
        pb.PAYOUT_STATE_SUCCEEDED, 1_000, "")
    [t] = done.transfers
    assert (t.state, t.attempt_count, [(a.idempotency_key, a.state) for a in t.attempts]) == (
        S, 1, [(key, S)])
    # the bank's own books: one order, under the original key, paid
    assert [(b.idempotency_key, b.amount_minor, b.paid)
            for b in await books(s.pool, made.payout_id)] == [(key, 1_000, True)]
    assert await balances(s, p.account) == [(4_000, 4_000, 0)]
    assert (await s.client.balance(p.custodial)).posted_minor == -5_000 + 1_000
    await _verify_clean(s)


async def test_resend_after_the_bank_never_got_it_is_not_sent_once_frozen(
        worker_db, redis_url, redis_prefix):
    """No resend after NOT_FOUND once frozen; after unfreeze and ApprovePayout the kept key
    is queried (NOT_FOUND again) and resent, the same key: one order at the bank."""
    async with stack(worker_db, redis_url, redis_prefix, run_worker=False) as s:
        p, made, job = await _blocked_resend(s)
        assert await books(s.pool, made.payout_id) == []
        await _approve_and_resume(s, p, made, job.order.idempotency_key)
        await _paid_once(s, p, made, job.order.idempotency_key)


async def test_original_reaching_the_bank_late_during_review_is_paid_once(
        worker_db, redis_url, redis_prefix):
    """As above, but the original submit reaches the bank late, while the payout is in
    review: the bank pays it and calls back; the callback is not applied (the transfer is
    not in flight) and the funds stay held; after ApprovePayout the query with the kept key
    finds it paid and books it: nothing is sent again."""
    async with stack(worker_db, redis_url, redis_prefix, run_worker=False) as s:
        p, made, job = await _blocked_resend(s)
        key = job.order.idempotency_key
        late = BankSimulator(s.pool, BankSimSettings(), Clock())
        await late.start()
        try:
            PayoutWorker(s.running.payouts, late, FAST)  # its callbacks go to a settler
            arrived = await late.submit(job.order)  # the original, arriving late
            assert arrived.state is BankState.SUCCEEDED
            for _ in range(100):  # the callback (25..75 ms later) is delivered
                if not late.pending_callbacks:
                    break
                await asyncio.sleep(0.02)
            assert late.pending_callbacks == 0
        finally:
            await late.close()
        review = await s.ops.get(made.payout_id)
        assert (review.state, review.paid_minor) == (pb.PAYOUT_STATE_MANUAL_REVIEW, 0)
        [t] = review.transfers
        assert (t.state, [a.state for a in t.attempts]) == (F, [U])
        assert await balances(s, p.account) == [(5_000, 4_000, 1_000)]
        assert [(b.idempotency_key, b.paid) for b in await books(s.pool, made.payout_id)] == [
            (key, True)]
        await _approve_and_resume(s, p, made, key)
        await _paid_once(s, p, made, key)


async def test_a_transfer_the_bank_accepted_before_the_freeze_is_booked(
        worker_db, redis_url, redis_prefix):
    """The bank has the order (PROCESSING) when the account is frozen: the money has left,
    so the worker only asks the bank, and the success is posted although the account is
    frozen now (the ledger agrees with the bank)."""
    async with stack(worker_db, redis_url, redis_prefix, run_worker=False) as s:
        p = await funded(s, 5_000, fee_fixed_minor=4)
        made = await s.ops.request(p.account, 1_004)
        # PROCESSING at the submit; final in the books 100..300 ms later, told only by query
        bank = BankSimSettings(query_only_rate=1.0, callback_delay_ms=200)
        async with _by_hand(s, bank) as (worker, claimed):
            [job] = await claimed()
            await worker.work(job)  # PROCESSING: the bank has it
            assert (await s.ops.get(made.payout_id)).state == pb.PAYOUT_STATE_SUBMITTED
            await _freeze(s, p.account)
            await asyncio.sleep(0.35)  # the bank completes the order meanwhile
            [again] = await claimed(ahead_ms=FAST.stuck_after_ms + 1_000)
            assert again.query_first
            await worker.work(again)
        done = await s.ops.get(made.payout_id)
        assert (done.state, done.paid_minor) == (pb.PAYOUT_STATE_SUCCEEDED, 1_000)
        assert [(b.idempotency_key, b.paid) for b in await books(s.pool, made.payout_id)] == [
            (f"po{made.payout_id}-t1-a1", True)]
        account = await s.client.call("GetAccount", lpb.GetAccountRequest(
            account_id=p.account))
        assert account.account.status == lpb.ACCOUNT_STATUS_FROZEN
        assert await balances(s, p.account, p.fee) == [(3_996, 3_996, 0), (4, 4, 0)]
        assert (await s.client.balance(p.custodial)).posted_minor == -5_000 + 1_000
        await _verify_clean(s)


async def test_payout_of_money_held_by_a_pending_transfer_is_insufficient_funds(
        worker_db, redis_url, redis_prefix):
    async with stack(worker_db, redis_url, redis_prefix, run_worker=False) as s:
        p = await funded(s, 5_000)
        await s.client.transfer(p.account, p.custodial, 4_000,
                                mode=lpb.TRANSFER_MODE_PENDING)
        assert await balances(s, p.account) == [(5_000, 1_000, 4_000)]
        assert await _refused(s.ops.request(p.account, 1_001)) == (
            grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
        assert await balances(s, p.account) == [(5_000, 1_000, 4_000)]  # nothing held
        made = await s.ops.request(p.account, 1_000)  # exactly what is available
        assert made.state == pb.PAYOUT_STATE_QUEUED
        assert await balances(s, p.account) == [(5_000, 0, 5_000)]
        await _verify_clean(s)
