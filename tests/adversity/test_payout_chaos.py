"""Chaos (issue 4): 500 payouts through a bank that fails 30% of orders, times out 10% of
calls, answers late, only by query, or twice, worked by two server processes' workers at
once. Every payout must end SUCCEEDED or MANUAL_REVIEW in bounded time; nothing may be paid
twice; the bank's own books, the payouts and the ledger must agree to the minor unit; and
after the manual reviews are rejected, every balance is exact and VerifyLedger is clean."""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import pytest

from clearing.dev.bank_sim import BankSimSettings
from clearing.payout.lifecycle import ledger_request_id
from clearing.v1 import payout_pb2 as pb
from tests.payout_worker_support import (
    FAST, FINAL, books, funded, stack, worker_database)

worker_db = pytest.fixture(scope="module", name="worker_db")(worker_database)

PAYOUT_COUNT = 500
ACCOUNT_COUNT = 25
AMOUNT_MINOR = 1_003  # fee 3, net 1,000: bank transfers of 500 + 500
FEE_MINOR = 3
TRANSFER_MAX_MINOR = 500
FUNDS_MINOR = (PAYOUT_COUNT // ACCOUNT_COUNT) * AMOUNT_MINOR + 7
REQUESTS_IN_FLIGHT_MAX = 50
SETTLE_TIMEOUT_S = 90.0  # observed: 4 s idle, 30 s with benchmarks on both cores
BANK = BankSimSettings(failure_rate=0.3, timeout_rate=0.1, lost_answer_share=0.5,
                       timeout_ms=20, latency_ms=2, processing_rate=0.3, query_only_rate=0.1,
                       duplicate_callback_rate=0.5, callback_delay_ms=50, seed=4)


async def _request_all(s, accounts: list) -> list[pb.Payout]:
    gate = asyncio.Semaphore(REQUESTS_IN_FLIGHT_MAX)

    async def one(i: int) -> pb.Payout:
        async with gate:
            return await s.ops.request(accounts[i % ACCOUNT_COUNT].account, AMOUNT_MINOR)

    return list(await asyncio.gather(*(one(i) for i in range(PAYOUT_COUNT))))


async def _all_final(s, ids: list[int]) -> dict[int, int]:
    """payout_id -> state, once every payout is SUCCEEDED, FAILED or MANUAL_REVIEW."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        rows = await s.pool.fetch("SELECT payout_id, state FROM payouts "
                                  "WHERE payout_id = ANY($1::bigint[])", ids)
        states = {r["payout_id"]: r["state"] for r in rows}
        if all(v in FINAL for v in states.values()) or time.monotonic() > deadline:
            left = collections.Counter(v for v in states.values() if v not in FINAL)
            assert not left, f"payouts not settled in {SETTLE_TIMEOUT_S} s: {left}"
            return states
        await asyncio.sleep(0.2)


async def _check_books_agree(s, ids: list[int]) -> None:
    """The bank paid each transfer at most once; what it paid per payout equals
    payouts.paid_minor and the ledger's posted amount; every paid key is an attempt the
    worker recorded SUCCEEDED, every attempt recorded FAILED the bank failed."""
    entries = [b for b in await books(s.pool) if int(b.idempotency_key[2:].split("-")[0]) in ids]
    paid_per_transfer = collections.Counter(b.idempotency_key.rsplit("-a", 1)[0]
                                            for b in entries if b.paid)
    assert paid_per_transfer and max(paid_per_transfer.values()) == 1
    bank_paid = collections.Counter()
    for b in entries:
        if b.paid:
            bank_paid[int(b.idempotency_key[2:].split("-")[0])] += b.amount_minor
    attempts = {r["idempotency_key"]: r["state"] for r in await s.pool.fetch(
        "SELECT a.idempotency_key, a.state FROM bank_transfer_attempts a "
        "JOIN bank_transfers t USING (bank_transfer_id) WHERE t.payout_id = ANY($1::bigint[])",
        ids)}
    for b in entries:
        expected = pb.BANK_TRANSFER_STATE_SUCCEEDED if b.paid else pb.BANK_TRANSFER_STATE_FAILED
        assert attempts[b.idempotency_key] == expected, b
    assert all(k in {b.idempotency_key for b in entries} for k in attempts)
    paid_minor = {r["payout_id"]: r["paid_minor"] for r in await s.pool.fetch(
        "SELECT payout_id, paid_minor FROM payouts WHERE payout_id = ANY($1::bigint[])", ids)}
    posted = {}
    for pid in ids:
        posted[pid] = await s.pool.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM transfers WHERE request_id = ANY($1::text[])",
            [ledger_request_id(pid, f"t{seq}:post") for seq in (1, 2)])
    for pid in ids:
        assert bank_paid[pid] == paid_minor[pid] == posted[pid], pid


async def _check_balances(s, accounts, owner: dict, paid: dict, states: dict, *,
                          held: bool) -> None:
    """Every sub-account and the fee account to the minor unit: a payout debits what the
    bank paid plus the fee once anything was paid; a work order still under review holds
    the rest (`held`), a rejected one released it."""
    debited = collections.Counter()
    pending = collections.Counter()
    fees = 0
    for payout_id, account_id in owner.items():
        fee = FEE_MINOR if paid[payout_id] else 0
        debited[account_id] += paid[payout_id] + fee
        fees += fee
        if states[payout_id] == pb.PAYOUT_STATE_SUCCEEDED:
            assert paid[payout_id] == AMOUNT_MINOR - FEE_MINOR, payout_id
        elif held:  # MANUAL_REVIEW
            pending[account_id] += AMOUNT_MINOR - paid[payout_id] - fee
    for a in accounts:
        b = await s.client.balance(a.account)
        posted = FUNDS_MINOR - debited[a.account]
        assert (b.posted_minor, b.available_minor, b.pending_debit_minor) == (
            posted, posted - pending[a.account], pending[a.account]), a
    # funded() sets the platform's config each time: the last fee account is the one
    assert (await s.client.balance(accounts[-1].fee)).posted_minor == fees


async def test_chaos_500_payouts_nothing_paid_twice(worker_db, redis_url, redis_prefix,
                                                    caplog):
    caplog.set_level(logging.WARNING, logger="clearing.payout")
    async with stack(worker_db, redis_url, redis_prefix, run_worker=False) as s:
        accounts = [await funded(s, FUNDS_MINOR, fee_fixed_minor=FEE_MINOR, prefix=f"a{i}-",
                                 bank_transfer_max_minor=TRANSFER_MAX_MINOR)
                    for i in range(ACCOUNT_COUNT)]
        made = await _request_all(s, accounts)
        ids = [m.payout_id for m in made]
        assert len(set(ids)) == PAYOUT_COUNT
        pid, keys = s.platform_id, s.keys
    started = time.monotonic()
    async with stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys,
                     bank=BANK, worker=FAST) as s1, \
            stack(worker_db, redis_url, redis_prefix, platform_id=pid, keys=keys,
                  bank=BANK, worker=FAST) as s2:
        states = await _all_final(s1, ids)
        elapsed = time.monotonic() - started
        counts = collections.Counter(states.values())
        assert counts[pb.PAYOUT_STATE_FAILED] == 0
        assert counts[pb.PAYOUT_STATE_SUCCEEDED] + counts[pb.PAYOUT_STATE_MANUAL_REVIEW] == \
            PAYOUT_COUNT
        assert counts[pb.PAYOUT_STATE_SUCCEEDED] >= PAYOUT_COUNT * 9 // 10  # 0.3^4 fail all
        await _check_books_agree(s1, ids)
        paid = {r["payout_id"]: r["paid_minor"] for r in await s1.pool.fetch(
            "SELECT payout_id, paid_minor FROM payouts WHERE payout_id = ANY($1::bigint[])",
            ids)}
        owner = {m.payout_id: m.account_id for m in made}
        review = [i for i, st in states.items() if st == pb.PAYOUT_STATE_MANUAL_REVIEW]
        # before the review: a work order holds what it has not paid (and the fee, unpaid)
        await _check_balances(s1, accounts, owner, paid, states, held=True)
        for i in review:  # the work orders: rejected; what was not paid comes back
            rejected = await s2.approver.reject(i, reason="chaos")
            assert (rejected.state, rejected.paid_minor) == (pb.PAYOUT_STATE_FAILED, paid[i])
        await _check_balances(s1, accounts, owner, paid, states, held=False)
        v = await s1.client.verify()
        assert v.ok and v.chain_ok and not v.mismatched_account_ids, v
        # no broken invariant, no deadlock between the two workers and the callbacks
        worker_errors = [r for r in caplog.records if r.name == "clearing.payout.worker"
                         and r.levelno >= logging.ERROR]
        assert not [r for r in worker_errors if r.levelno >= logging.CRITICAL
                    or "deadlock" in (r.exc_text or "") + str(r.exc_info)], worker_errors
        print(f"chaos: {dict(counts)} settled in {elapsed:.1f} s; "
              f"{sum(1 for i in review if paid[i])} work orders partly paid; "
              f"{len(worker_errors)} worker errors logged")
