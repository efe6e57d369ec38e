"""One batch's transaction of fresh postings, for the ledger writer (clearing.ledger.writer,
whose module docstring tells the steps and "Lock late"): lock what the postings touch,
apply them in memory (`clearing.ledger.batch`), write everything (`clearing.ledger.batch_sql`)
and the sinks' attachments, in the old order or the late one; the balance lock's timing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Callable, Iterable, Mapping, Protocol, Sequence

import asyncpg

from clearing import metrics
from clearing.errors import InvariantViolation, invariant
from clearing.ledger import batch_sql
from clearing.ledger.batch import Batch, Decision, LockedAccount, PendingTransfer
from clearing.ledger.model import Mode, PendingState, Posting, TransferRecord


class BatchSink(Protocol):
    """Writes the attachments of a batch's committed postings, in the batch's transaction,
    in one statement (no round trip per posting). It must not fail on business rules:
    those are checked before a posting is submitted."""

    async def write(self, conn: asyncpg.Connection,
                    committed: list[tuple[Posting, list[TransferRecord]]]) -> None: ...


class RaceLost(Exception):
    """Another process recorded one of this batch's request ids first: redo the batch."""


class LateRaceLost(Exception):
    """An account read without a lock changed its status before the late statement:
    redo the batch with every account locked first."""


class LockTiming:
    """A batch's balance row lock (time.perf_counter): the locking statement's start and
    end, and from when the lock counts as held: the statement's end in the old order (the
    lock is taken by its first row); its start in the late order (its lock is taken
    somewhere inside it: a bound above, the statement's wait counted as held)."""

    __slots__ = ("asked", "locked", "held_from")

    def __init__(self) -> None:
        self.asked = self.locked = self.held_from = 0.0

    def statement(self, asked: float, locked: float, *, late: bool) -> None:
        self.asked, self.locked = asked, locked
        self.held_from = asked if late else locked

    def observe_commit(self, committing: float) -> None:
        """At the end of COMMIT (asked for at `committing`): the batch's lock wait, hold
        time and COMMIT time, if it took the lock."""
        if self.held_from:
            now = time.perf_counter()
            metrics.WRITER_LOCK_WAIT_SECONDS.observe(self.locked - self.asked)
            metrics.WRITER_LOCK_HOLD_SECONDS.observe(now - self.held_from)
            metrics.WRITER_LOCK_COMMIT_SECONDS.observe(now - committing)


_SQL_PENDING_PEEK = f"""
SELECT transfer_id, debit_account_id, credit_account_id FROM transfers
WHERE transfer_id = ANY($1::bigint[]) AND mode = {Mode.PENDING:d}
"""
_SQL_LOCK_ACCOUNTS = """
SELECT account_id, platform_id, currency_code, status, allow_negative,
       debits_posted, credits_posted, debits_pending, credits_pending, frozen
FROM accounts WHERE account_id = ANY($1::bigint[]) ORDER BY account_id FOR UPDATE
"""
# Lock late: of the accounts $1, those debited ($2) that may not go negative are locked
# (in id order), the others read. `allow_negative` never changes once an account is made.
_SQL_LOCK_ACCOUNTS_EARLY = """
WITH locked AS (
  SELECT account_id, platform_id, currency_code, status, allow_negative,
         debits_posted, credits_posted, debits_pending, credits_pending, frozen
  FROM accounts WHERE account_id = ANY($2::bigint[]) AND NOT allow_negative
  ORDER BY account_id FOR UPDATE)
SELECT * FROM locked
UNION ALL
SELECT account_id, platform_id, currency_code, status, allow_negative,
       debits_posted, credits_posted, debits_pending, credits_pending, frozen
FROM accounts WHERE account_id = ANY($1::bigint[])
  AND (allow_negative OR NOT account_id = ANY($2::bigint[]))
"""
_SQL_LOCK_PENDING = f"""
SELECT transfer_id, platform_id, debit_account_id, credit_account_id, currency_code,
       pending_remaining, pending_state
FROM transfers WHERE transfer_id = ANY($1::bigint[]) AND mode = {Mode.PENDING:d}
ORDER BY transfer_id FOR UPDATE
"""
# ---- one transaction's fresh postings -------------------------------------------------------

async def commit_fresh(conn: asyncpg.Connection, now: dt.datetime,
                        sinks: Mapping[str, BatchSink], postings: Sequence[Posting],
                        lock_late: bool = False,
                        timing: LockTiming | None = None, *,
                        negative_ok: Callable[[Iterable[int]], None] | None = None
                        ) -> list[Decision]:
    """Lock what the postings touch, apply them in memory (`clearing.ledger.batch`), write
    everything in one statement (`clearing.ledger.batch_sql`), then the sinks'
    attachments; in the caller's transaction. Each item's decision, in order. With
    `lock_late`, see "Lock late" in the module docstring. `negative_ok` is told the ids
    of the accounts read that may go negative (the writer's pipeline learns them)."""
    timing = timing or LockTiming()
    if lock_late:
        return await _commit_fresh_late(conn, now, sinks, postings, timing, negative_ok)
    _, decisions, writes = await _apply(conn, now, postings, negative_ok, timing=timing)
    counts = await conn.fetchrow(batch_sql.WRITE_BATCH, *batch_sql.write_arguments(writes))
    if counts["recorded"] != len(writes.requests):
        raise RaceLost()
    batch_sql.check_counts(counts, writes)
    await _write_attachments(conn, sinks, postings, decisions)
    return decisions


async def _commit_fresh_late(conn: asyncpg.Connection, now: dt.datetime,
                             sinks: Mapping[str, BatchSink], postings: Sequence[Posting],
                             timing: LockTiming,
                             negative_ok: Callable[[Iterable[int]], None] | None
                             ) -> list[Decision]:
    """`commit_fresh` in the late order: the balance rows of accounts that may go
    negative are locked by the last statement before COMMIT."""
    initial, decisions, writes = await _apply(conn, now, postings, negative_ok, late=True)
    counts = await conn.fetchrow(batch_sql.WRITE_ROWS, *batch_sql.rows_arguments(writes))
    if counts["recorded"] != len(writes.requests):
        raise RaceLost()
    batch_sql.check_row_counts(counts, writes)
    await _write_attachments(conn, sinks, postings, decisions)
    message = batch_sql.late_and_commit(writes, initial)
    asked = time.perf_counter()
    try:
        await conn.execute(message)  # the late statement and COMMIT, one round trip
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == batch_sql.LATE_STALE:
            raise LateRaceLost() from exc
        if exc.sqlstate == batch_sql.LATE_LINKS:
            raise InvariantViolation(str(exc)) from exc
        raise
    timing.statement(asked, time.perf_counter(), late=True)
    return decisions


async def _apply(conn: asyncpg.Connection, now: dt.datetime, postings: Sequence[Posting],
                 negative_ok: Callable[[Iterable[int]], None] | None, *, late: bool = False,
                 timing: LockTiming | None = None):
    """Both orders' first steps: lock (or, late, read) what the postings touch, tell
    `negative_ok`, apply the postings in memory in a new journal batch. The accounts'
    balances as read before the batch (late only), each posting's decision, the batch's writes."""
    accounts, pendings = await _lock(conn, postings, late=late, timing=timing)
    if negative_ok is not None:
        negative_ok([a.account_id for a in accounts if a.allow_negative])
    initial = {a.account_id: (a.debits_posted, a.credits_posted, a.debits_pending,
                              a.credits_pending, a.status) for a in accounts} if late else {}
    batch_id = await conn.fetchval("SELECT nextval('journal_batch_id_seq')")
    batch = Batch(batch_id, now, accounts, pendings)
    decisions = [batch.add(posting) for posting in postings]
    return initial, decisions, batch.writes()


async def _lock(conn: asyncpg.Connection, postings: Sequence[Posting], *, late: bool = False,
                timing: LockTiming | None = None
                ) -> tuple[list[LockedAccount], list[PendingTransfer]]:
    """Lock the accounts the postings touch and the pending transfers they post or void
    (in id order: no deadlocks between processes); with `late`, only the debited accounts
    that may not go negative are locked, the others read (module docstring)."""
    account_ids: set[int] = set()
    debited: set[int] = set()
    pending_ids: set[int] = set()
    for posting in postings:
        for leg in posting.legs:
            account_ids.add(leg.debit_account_id)
            account_ids.add(leg.credit_account_id)
            debited.add(leg.debit_account_id)
            if leg.pending_id:
                pending_ids.add(leg.pending_id)
                debited.add(leg.credit_account_id)
    if pending_ids:  # learn the accounts of pending transfers (immutable columns)
        for r in await conn.fetch(_SQL_PENDING_PEEK, list(pending_ids)):
            account_ids.add(r["debit_account_id"])
            account_ids.add(r["credit_account_id"])
            debited.add(r["debit_account_id"])
            debited.add(r["credit_account_id"])
    account_ids.discard(0)
    if late:
        accounts = _locked_accounts(await conn.fetch(
            _SQL_LOCK_ACCOUNTS_EARLY, sorted(account_ids), sorted(debited & account_ids)))
    else:
        asked = time.perf_counter()
        accounts = _locked_accounts(await conn.fetch(_SQL_LOCK_ACCOUNTS, sorted(account_ids)))
        if timing is not None:
            timing.statement(asked, time.perf_counter(), late=False)
    pendings = [_pending_transfer(row)
                for row in await conn.fetch(_SQL_LOCK_PENDING, sorted(pending_ids))] \
        if pending_ids else []
    return accounts, pendings


# `LockedAccount`'s fields but `touched`: the columns of _SQL_LOCK_ACCOUNTS, in order.
_LOCKED_ACCOUNT_COLUMNS = tuple(f.name for f in dataclasses.fields(LockedAccount))[:-1]


def _locked_accounts(rows: list[asyncpg.Record]) -> list[LockedAccount]:
    """The locked rows as batch state. A row is unpacked by position (a third of the time
    of reading ten columns by name, on thousands of rows per batch), so the columns are
    checked to be the fields, by name and in order, once per batch."""
    invariant(not rows or tuple(rows[0].keys()) == _LOCKED_ACCOUNT_COLUMNS,
              "the locked account columns are not LockedAccount's fields")
    return [LockedAccount(*row) for row in rows]


def _pending_transfer(row: asyncpg.Record) -> PendingTransfer:
    return PendingTransfer(
        transfer_id=row["transfer_id"], platform_id=row["platform_id"],
        debit_account_id=row["debit_account_id"], credit_account_id=row["credit_account_id"],
        currency_code=row["currency_code"], remaining=row["pending_remaining"],
        state=PendingState(row["pending_state"]))


async def _write_attachments(conn: asyncpg.Connection, sinks: Mapping[str, BatchSink],
                             postings: Sequence[Posting], decisions: list[Decision]) -> None:
    by_sink: dict[str, list[tuple[Posting, list[TransferRecord]]]] = {}
    for posting, decision in zip(postings, decisions):
        if posting.sink and not isinstance(decision.outcome, BaseException):
            by_sink.setdefault(posting.sink, []).append((posting, decision.outcome))
    for name, committed in by_sink.items():
        await sinks[name].write(conn, committed)
