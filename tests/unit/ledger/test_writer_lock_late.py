"""The writer's lock order (CLEARING_WRITER_LOCK_LATE, issue 16) on a real PostgreSQL: an
account that may not go negative is still refused an overdraft, alone, in a batch whose other
postings book; the same postings give the same ledger in both orders (balances, journal,
idempotency records, VerifyLedger); an account that may go negative (read without a lock in
the late order) frozen while a batch waits for its row is refused, the batch redone with
every account locked first and its other postings booked."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from clearing import metrics
from clearing.clock import Clock
from clearing.config import WriterSettings
from clearing.errors import FailedPrecondition
from clearing.ledger import store, verify
from clearing.ledger.model import (AccountKind, AccountStatus, Leg, Mode, OwnerType,
                                   PendingState, Posting)
from clearing.ledger.writer import LedgerWriter
from tests.unit.ledger.conftest import posting
from tests.unit.ledger.test_writer_failures import _next_waiter

BOTH_ORDERS = pytest.mark.parametrize("lock_late", [True, False], ids=["late", "early"])


def _writer(pool, lock_late: bool) -> LedgerWriter:
    return LedgerWriter(pool, WriterSettings(batch_size_max=100, flush_ms_max=5,
                                             queue_max=100, lock_late=lock_late), Clock())


async def _balances(pool, pid: int, ids: list[int]) -> list[tuple[int, int, int, int]]:
    async with pool.acquire() as conn:
        out = []
        for account_id in ids:
            b = (await store.get_account(conn, pid, account_id=account_id)).balance
            out.append((b.debits_posted, b.credits_posted, b.debits_pending,
                        b.credits_pending))
        return out


def _leg(pid: int, request_id: str, leg: Leg) -> Posting:
    return Posting(pid, request_id, "Transfer", request_id.encode().ljust(32, b"."), (leg,))


async def _platform(pool) -> tuple[int, int, list[int]]:
    """A platform like the `accounts` fixture's: a custodial and three merchant accounts."""
    async with pool.acquire() as conn:
        pid = await conn.fetchval("INSERT INTO platforms (name) VALUES ($1) RETURNING platform_id",
                                  f"w_{secrets.token_hex(5)}")
        custodial = await store.insert_account(conn, pid, "c", AccountKind.CUSTODIAL,
                                               OwnerType.ENTERPRISE, "CNY", True, "")
        merchants = [await store.insert_account(conn, pid, f"m{i}", AccountKind.MERCHANT,
                                                OwnerType.ENTERPRISE, "CNY", False, "")
                     for i in range(3)]
    return pid, custodial, merchants


def _hold_count() -> float:
    return metrics.WRITER_LOCK_HOLD_SECONDS._sum.get()


@BOTH_ORDERS
async def test_an_overdraft_is_refused_alone_the_batch_books_the_rest(pool, accounts, started,
                                                                       lock_late):
    pid, custodial, (m0, m1, m2) = accounts
    writer = started(_writer(pool, lock_late))
    before = _hold_count()
    outcomes = await writer.submit_many([
        posting(pid, custodial, m0, 50),   # the custodial account may go negative
        posting(pid, m0, m1, 80),          # m0 has 50: refused, alone
        posting(pid, m0, m1, 20),          # fits
        posting(pid, custodial, m2, 5),
        posting(pid, m1, m2, 21),          # m1 has 20: refused, alone
    ])
    await writer.drain_and_stop()
    assert [type(o).__name__ for o in outcomes] == [
        "list", "FailedPrecondition", "list", "list", "FailedPrecondition"]
    assert {o.reason for o in outcomes if isinstance(o, FailedPrecondition)} == {
        "INSUFFICIENT_FUNDS"}
    assert await _balances(pool, pid, [custodial, m0, m1, m2]) == [
        (55, 0, 0, 0), (20, 50, 0, 0), (0, 20, 0, 0), (0, 5, 0, 0)]
    assert (await verify.verify(pool, pid)).ok
    assert _hold_count() > before  # the lock's hold time is measured in both orders


async def _run_script(pool, started, accounts, lock_late: bool) -> tuple:
    """The same postings, in the same batches: every mode, refusals, a replay; the ledger
    they leave, with account and transfer ids replaced by their places."""
    pid, custodial, (m0, m1, m2) = accounts
    writer = started(_writer(pool, lock_late))
    funded = posting(pid, custodial, m0, 1_000, "fund")
    first = await writer.submit_many([
        funded,
        posting(pid, custodial, m1, 300, "fund-1"),
        posting(pid, m0, m2, 2_000, "too-much"),                       # refused
        posting(pid, m0, m1, 100, "m0-m1"),
    ])
    hold = _leg(pid, "hold", Leg(m1, m2, 250, "CNY", Mode.PENDING))
    hold2 = _leg(pid, "hold-2", Leg(custodial, m2, 70, "CNY", Mode.PENDING))
    second = await writer.submit_many([hold, hold2, funded,           # `funded`: a replay
                                       posting(pid, m1, m0, 200, "over")])  # held: refused
    pending_id = second[0][0].transfer_id
    pending2 = second[1][0].transfer_id
    third = await writer.submit_many([
        _leg(pid, "post", Leg(0, 0, 150, "", Mode.POST_PENDING, pending_id)),
        _leg(pid, "void", Leg(0, 0, 0, "", Mode.VOID_PENDING, pending2)),
        posting(pid, custodial, m2, 9, "tail"),
    ])
    await writer.drain_and_stop()
    place = {custodial: "c", m0: "m0", m1: "m1", m2: "m2"}
    outcomes = [type(o).__name__ if isinstance(o, Exception) else len(o)
                for o in [*first, *second, *third]]
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT request_id, debit_account_id, credit_account_id, amount, mode,"
            " pending_remaining, pending_state FROM transfers WHERE platform_id = $1"
            " ORDER BY transfer_id", pid)
        requests = await conn.fetch(
            "SELECT request_id, ok, error_reason FROM requests WHERE platform_id = $1"
            " ORDER BY request_id", pid)
    journal = [(r["request_id"], place[r["debit_account_id"]], place[r["credit_account_id"]],
                r["amount"], Mode(r["mode"]), r["pending_remaining"],
                PendingState(r["pending_state"])) for r in rows]
    report = await verify.verify(pool, pid)
    assert report.ok, report
    return (outcomes, await _balances(pool, pid, [custodial, m0, m1, m2]), journal,
            [tuple(r) for r in requests])


async def test_both_lock_orders_leave_the_same_ledger(pool, started, accounts):
    """`accounts` is one platform; the second run gets a platform of its own."""
    other = await _platform(pool)
    late = await _run_script(pool, started, accounts, True)
    early = await _run_script(pool, started, other, False)
    assert late == early
    outcomes, balances, journal, _ = late
    assert outcomes == [1, 1, "FailedPrecondition", 1, 1, 1, 1, "FailedPrecondition", 1, 1, 1]
    assert balances == [(1_309, 0, 0, 0), (100, 1_000, 0, 0), (150, 400, 100, 0),
                        (0, 159, 0, 100)]
    assert len(journal) == 8


@BOTH_ORDERS
async def test_a_custodial_account_frozen_while_the_batch_waits_is_refused(
        pool, accounts, started, lock_late):
    pid, custodial, (m0, m1, m2) = accounts
    writer = started(_writer(pool, lock_late))
    await writer.submit(posting(pid, custodial, m0, 40))
    freezer = await pool.acquire()
    watch = await pool.acquire()
    try:
        retries = metrics.WRITER_BATCH_RETRIES._value.get()
        tx = freezer.transaction()
        await tx.start()
        await freezer.execute("UPDATE accounts SET status = $2 WHERE account_id = $1",
                              custodial, int(AccountStatus.FROZEN))
        batch = asyncio.ensure_future(writer.submit_many([
            posting(pid, custodial, m1, 5),   # the frozen account: refused on the redo
            posting(pid, m0, m2, 15),         # books
        ]))
        await _next_waiter(watch, {freezer.get_server_pid()}, set())
        await tx.commit()
        outcomes = await asyncio.wait_for(batch, 10)
    finally:
        await pool.release(freezer)
        await pool.release(watch)
    await writer.drain_and_stop()
    assert isinstance(outcomes[0], FailedPrecondition)
    assert outcomes[0].reason == "ACCOUNT_FROZEN"
    # the late order saw the status change in its last statement and redid the batch
    assert metrics.WRITER_BATCH_RETRIES._value.get() - retries == (1 if lock_late else 0)
    assert [r.amount_minor for r in outcomes[1]] == [15]
    assert await _balances(pool, pid, [custodial, m0, m1, m2]) == [
        (40, 0, 0, 0), (15, 40, 0, 0), (0, 0, 0, 0), (0, 15, 0, 0)]
    assert (await verify.verify(pool, pid)).ok


async def test_a_deadlock_of_the_late_order_is_redone_in_the_old_order(pool, accounts, started):
    """Writer A debits m0 (locked first) and only credits m1 (locked last); another writer,
    played by a connection, has m1 locked first and then wants m0: a deadlock, which
    PostgreSQL breaks by failing A (A waits the shorter deadlock_timeout); A redoes its
    batch with every account locked first, in id order, and books it."""
    pid, custodial, (m0, m1, m2) = accounts
    writer = started(_writer(pool, True))
    await writer.submit(posting(pid, custodial, m0, 30))
    other = await pool.acquire()
    watch = await pool.acquire()
    try:
        retries = metrics.WRITER_BATCH_RETRIES._value.get()
        tx = other.transaction()
        await tx.start()
        await other.execute("SET LOCAL deadlock_timeout = '10s'")
        await other.execute("SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", m1)
        booked = asyncio.ensure_future(writer.submit(posting(pid, m0, m1, 12)))
        writer_pid = await _next_waiter(watch, {other.get_server_pid()}, set())
        crossing = asyncio.ensure_future(other.execute(
            "SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", m0))
        # A (deadlock_timeout 1 s) finds the deadlock and fails; `other` then gets m0
        await asyncio.wait_for(crossing, 10)
        for _ in range(200):  # the writer counts its retry after PostgreSQL failed it
            if metrics.WRITER_BATCH_RETRIES._value.get() - retries:
                break
            await asyncio.sleep(0.01)
        assert metrics.WRITER_BATCH_RETRIES._value.get() - retries == 1
        await tx.rollback()
        records = await asyncio.wait_for(booked, 10)
    finally:
        await pool.release(other)
        await pool.release(watch)
    await writer.drain_and_stop()
    assert writer_pid
    assert [r.amount_minor for r in records] == [12]
    assert await _balances(pool, pid, [custodial, m0, m1]) == [
        (30, 0, 0, 0), (12, 30, 0, 0), (0, 12, 0, 0)]
    assert (await verify.verify(pool, pid)).ok
