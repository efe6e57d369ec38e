"""The writer when the database fails under it or another writer races it, on a real
PostgreSQL: a batch whose connection dies is tried again on a new one and books its postings
once; after `BATCH_ATTEMPTS_MAX` failed attempts its postings are answered UNAVAILABLE
(DATABASE_UNAVAILABLE) with nothing committed, and the same request ids then commit once;
a request id another writer recorded first is answered that writer's result (the batch is
redone, nothing booked twice); a caller that goes away leaves its posting committed.

A transient failure is made for real: the writer's backend is terminated
(pg_terminate_backend) while it waits on a row lock another connection holds."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from clearing import metrics
from clearing.clock import Clock
from clearing.config import WriterSettings
from clearing.errors import Unavailable
from clearing.ledger import store, verify
from clearing.ledger.writer import BATCH_ATTEMPTS_MAX, LedgerWriter
from tests.unit.ledger.conftest import posting

WAIT_S = 10.0

# Backends that wait on a lock one of the given backends holds (only this test's: other
# processes may be testing on the same database at the same time).
_WAITERS = "SELECT pid FROM pg_stat_activity WHERE pg_blocking_pids(pid) && $1::int[]"


async def _next_waiter(watch, holders: set[int], seen: set[int]) -> int:
    """The backend (not in `seen`) that waits on a lock `holders` (or a backend in `seen`)
    hold, once there is one."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        pids = {r["pid"] for r in await watch.fetch(_WAITERS, list(holders | seen))} - seen
        if pids:
            (pid,) = pids
            return pid
        await asyncio.sleep(0.01)
    raise AssertionError("no backend waits on the lock")


class _Locked:
    """Holds `FOR UPDATE` on an account in a transaction of its own connection."""

    def __init__(self, pool, account_id: int) -> None:
        self.pool, self.account_id = pool, account_id

    async def __aenter__(self):
        self.conn = await self.pool.acquire()
        self.tx = self.conn.transaction()
        await self.tx.start()
        await self.conn.execute("SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE",
                                self.account_id)
        self.pids = {self.conn.get_server_pid()}
        return self

    async def __aexit__(self, *exc):
        await self.tx.rollback()
        await self.pool.release(self.conn)


def _retries() -> float:
    return metrics.WRITER_BATCH_RETRIES._value.get()


async def _booked(pool, pid: int, account_id: int, request_id: str) -> tuple[int, int, int]:
    """(posted balance, journal rows of the request id, idempotency records of it)."""
    async with pool.acquire() as conn:
        posted = (await store.get_account(conn, pid, account_id=account_id)).balance.posted
        rows = await conn.fetchval("SELECT count(*) FROM transfers WHERE platform_id = $1"
                                   " AND request_id = $2", pid, request_id)
        records = await conn.fetchval("SELECT count(*) FROM requests WHERE platform_id = $1"
                                      " AND request_id = $2", pid, request_id)
    return posted, rows, records


@pytest.fixture
async def watch(pool):
    async with pool.acquire() as conn:
        yield conn


async def test_a_batch_whose_connection_dies_is_retried_and_booked_once(pool, accounts,
                                                                         started, watch):
    pid, c, (m0, *_) = accounts
    writer = started(LedgerWriter(pool, WriterSettings(flush_ms_max=0), Clock()))
    retries = _retries()
    async with _Locked(pool, m0) as lock:
        task = asyncio.create_task(writer.submit(posting(pid, c, m0, 7, "r1")))
        first = await _next_waiter(watch, lock.pids, set())
        assert await watch.fetchval("SELECT pg_terminate_backend($1)", first)
        second = await _next_waiter(watch, lock.pids, {first})  # the retry, on a new connection
        assert not task.done()
    (record,) = await asyncio.wait_for(task, WAIT_S)
    assert (record.amount_minor, record.credit_account_id) == (7, m0)
    assert await _booked(pool, pid, m0, "r1") == (7, 1, 1)
    assert _retries() == retries + 1
    assert second != first
    # the writer goes on with its new connection
    await writer.submit(posting(pid, c, m0, 1))
    assert (await _booked(pool, pid, m0, "r1"))[0] == 8
    assert (await verify.verify(pool, pid)).ok


async def test_after_the_last_failed_attempt_nothing_is_committed(pool, accounts, started,
                                                                   watch, caplog):
    pid, c, (m0, m1, _) = accounts
    caplog.set_level(logging.WARNING, "clearing.ledger.writer")
    writer = started(LedgerWriter(pool, WriterSettings(flush_ms_max=20), Clock()))
    retries = _retries()
    killed: set[int] = set()
    async with _Locked(pool, m0) as lock:
        tasks = [asyncio.create_task(writer.submit(posting(pid, c, m0, 5, "u1"))),
                 asyncio.create_task(writer.submit(posting(pid, c, m1, 3, "u2")))]
        started_at = time.monotonic()
        for _ in range(BATCH_ATTEMPTS_MAX):
            backend = await _next_waiter(watch, lock.pids, killed)
            killed.add(backend)
            assert await watch.fetchval("SELECT pg_terminate_backend($1)", backend)
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                                          WAIT_S)
        elapsed = time.monotonic() - started_at
    for outcome in outcomes:  # both postings shared the batch: neither is committed
        assert isinstance(outcome, Unavailable)
        assert outcome.reason == "DATABASE_UNAVAILABLE"
        assert "retry with the same request_id" in outcome.message
    assert _retries() == retries + BATCH_ATTEMPTS_MAX
    # each failed attempt is logged, with its number and the database's error
    attempts = [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()]
    assert [m.partition(" failed: ")[0] for m in attempts] == [
        f"ledger batch attempt {n}" for n in range(1, BATCH_ATTEMPTS_MAX + 1)]
    assert all(m.partition(" failed: ")[2] for m in attempts)
    # it waited between attempts: 0.05 s, 0.10 s, ... after each
    assert elapsed >= 0.05 * sum(range(1, BATCH_ATTEMPTS_MAX))
    assert await _booked(pool, pid, m0, "u1") == (0, 0, 0)
    assert await _booked(pool, pid, m1, "u2") == (0, 0, 0)
    # the same request ids, sent again, commit once
    await writer.submit(posting(pid, c, m0, 5, "u1"))
    await writer.submit(posting(pid, c, m1, 3, "u2"))
    assert await _booked(pool, pid, m0, "u1") == (5, 1, 1)
    assert await _booked(pool, pid, m1, "u2") == (3, 1, 1)


async def test_a_request_id_another_writer_recorded_first_answers_its_result(
        pool, accounts, started, watch):
    pid, c, (m0, m1, _) = accounts
    one = started(LedgerWriter(pool, WriterSettings(flush_ms_max=0), Clock()))
    other = started(LedgerWriter(pool, WriterSettings(flush_ms_max=0), Clock()))
    retries = _retries()
    async with _Locked(pool, m0) as lock:
        first = asyncio.create_task(one.submit(posting(pid, c, m0, 9, "race")))
        waiter = await _next_waiter(watch, lock.pids, set())
        # both looked for a record of "race" before the lock: neither found one
        second = asyncio.create_task(other.submit(posting(pid, c, m0, 9, "race")))
        await _next_waiter(watch, lock.pids, {waiter})
        # the other writer's batch, alone, with a posting of its own on another account
        alone = asyncio.create_task(other.submit(posting(pid, c, m1, 4, "alone")))
    a, b = await asyncio.wait_for(asyncio.gather(first, second), WAIT_S)
    assert [r.transfer_id for r in b] == [r.transfer_id for r in a]  # the first result
    assert await _booked(pool, pid, m0, "race") == (9, 1, 1)
    assert _retries() >= retries + 1
    await asyncio.wait_for(alone, WAIT_S)
    assert await _booked(pool, pid, m1, "alone") == (4, 1, 1)
    assert (await verify.verify(pool, pid)).ok


async def test_a_caller_that_goes_away_leaves_its_posting_committed(pool, accounts, started,
                                                                     watch):
    pid, c, (m0, *_) = accounts
    writer = started(LedgerWriter(pool, WriterSettings(flush_ms_max=0), Clock()))
    async with _Locked(pool, m0) as lock:
        gone = asyncio.create_task(writer.submit(posting(pid, c, m0, 2, "gone")))
        group = asyncio.create_task(writer.submit_many([posting(pid, c, m0, 3, "g1")]))
        await _next_waiter(watch, lock.pids, set())
        gone.cancel()
        group.cancel()
        await asyncio.gather(gone, group, return_exceptions=True)
    await writer.drain_and_stop()  # the flusher lives on: it drains
    assert await _booked(pool, pid, m0, "gone") == (5, 1, 1)
    assert (await _booked(pool, pid, m0, "g1"))[1:] == (1, 1)
