"""The 7x24 sweep: a background task in every server process that checks, continuously,
every split against its ledger transfers and every payout against its bank transfers
(`sweep_sql`), and raises an alert for each item found wrong: a discrepancy
(SPLIT_LEDGER_MISMATCH, PAYOUT_BANK_MISMATCH, no run), the counter
clearing_recon_sweep_discrepancies_total and a warning log line.

Checked once, by one process: each kind of item has a watermark row in recon_sweep_cursors
(migration 0014). A sweep of a kind takes its row with FOR UPDATE SKIP LOCKED (a process
whose neighbour is sweeping that kind skips it rather than wait), checks the next batch of
items in (updated_at, id) order whose updated_at is older than the settle delay, writes the
discrepancies with their discrepancy.opened events (`clearing.recon.events`) and moves the
watermark, all in one transaction: a crash checks nothing twice
and loses nothing. An item that changes later (a release, a refund, a bank transfer paid)
gets a later updated_at and is checked again in its new version. The settle delay keeps the
sweep behind the writers: an item's updated_at is its transaction's time, so a transaction
still open when the watermark passes its time would be missed; the delay (60 s by default)
is far longer than any of them. A re-check of an item still wrong adds no second OPEN
discrepancy of its class.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import asyncpg

from clearing import metrics
from clearing.clock import Clock
from clearing.config import ReconSettings
from clearing.errors import invariant
from clearing.recon import events
from clearing.recon.model import MatchClass
from clearing.recon.sweep_sql import (SQL_SWEEP_PAYOUTS, SQL_SWEEP_SPLITS,
                                      SQL_UNCHECKABLE_PAYOUT, SQL_UNCHECKABLE_SPLIT)
from clearing.tasks import Periodic

log = logging.getLogger("clearing.recon.sweep")
# The database's message kept in an unreadable item's description at most.
UNREADABLE_MESSAGE_LEN_MAX = 200


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of item: its name (the cursor's), its check, the check of one item that
    cannot be read, the class of its discrepancies."""

    name: str
    sql: str
    unreadable_sql: str
    cls: MatchClass


KINDS = (Kind("split", SQL_SWEEP_SPLITS, SQL_UNCHECKABLE_SPLIT,
              MatchClass.SPLIT_LEDGER_MISMATCH),
         Kind("payout", SQL_SWEEP_PAYOUTS, SQL_UNCHECKABLE_PAYOUT,
              MatchClass.PAYOUT_BANK_MISMATCH))


@dataclass(frozen=True, slots=True)
class Checked:
    """What one check statement did: the last item checked, the counts."""

    last_updated_at: dt.datetime
    last_id: int
    checked_count: int
    wrong_count: int
    inserted_count: int
    inserted_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one batch of one kind found."""

    kind: str
    checked_count: int
    wrong_count: int
    inserted_count: int


@dataclass(slots=True)
class SweepOutcome:
    """What one sweep (every kind, batch after batch) found; `skipped`: kinds another
    process was sweeping."""

    checked: dict[str, int]
    inserted: dict[str, int]
    skipped: list[str]


class Sweeper(Periodic):
    """Sweeps every `settings.sweep_interval_ms` (sooner while batches come back full).
    `tick()` is one sweep, callable directly (tests)."""

    def __init__(self, pool: asyncpg.Pool, clock: Clock, settings: ReconSettings) -> None:
        self._pool = pool
        self._clock = clock
        self._settings = settings
        super().__init__()

    task_name = "recon-sweep"
    failure = "reconciliation sweep failed"

    @property
    def interval_s(self) -> float:
        return self._settings.sweep_interval_ms / 1000

    async def tick(self) -> SweepOutcome:
        """Check every kind's items up to the settle limit, batch after batch, at most
        `sweep_batches_max` batches per kind."""
        outcome = SweepOutcome({}, {}, [])
        for kind in KINDS:
            outcome.checked[kind.name] = outcome.inserted[kind.name] = 0
            for _ in range(self._settings.sweep_batches_max):
                if self._stopping.is_set():
                    return outcome
                batch = await self._batch(kind)
                if batch is None:
                    outcome.skipped.append(kind.name)
                    break
                outcome.checked[kind.name] += batch.checked_count
                outcome.inserted[kind.name] += batch.inserted_count
                if batch.checked_count < self._settings.sweep_batch_max:
                    break
        return outcome

    async def _batch(self, kind: Kind) -> BatchOutcome | None:
        """One batch of `kind` in one transaction; None if another process holds the kind."""
        now = self._clock.now()
        limit = now - dt.timedelta(seconds=self._settings.settle_s)
        async with self._pool.acquire() as conn, conn.transaction():
            cursor = await conn.fetchrow(
                "SELECT checked_updated_at, checked_id FROM recon_sweep_cursors"
                " WHERE item_kind = $1 FOR UPDATE SKIP LOCKED", kind.name)
            if cursor is None:
                return None
            done = await self._check(conn, kind, cursor["checked_updated_at"],
                                     cursor["checked_id"], limit, now)
            batch = BatchOutcome(kind.name, sum(c.checked_count for c in done),
                                 sum(c.wrong_count for c in done),
                                 sum(c.inserted_count for c in done))
            invariant(batch.inserted_count <= batch.wrong_count <= batch.checked_count
                      <= self._settings.sweep_batch_max, f"sweep of {kind.name}: {batch}")
            # discrepancy.opened of the batch's new discrepancies, in its transaction
            opened = await events.opened(conn, [i for c in done for i in c.inserted_ids], "",
                                         now)
            invariant(opened in (0, batch.inserted_count),
                      f"sweep of {kind.name}: {opened} discrepancy events, "
                      f"{batch.inserted_count} inserted")
            if batch.checked_count:
                await conn.execute(
                    "UPDATE recon_sweep_cursors SET checked_updated_at = $2, checked_id = $3,"
                    " checked_count = checked_count + $4,"
                    " discrepancy_count = discrepancy_count + $5, swept_at = $6"
                    " WHERE item_kind = $1", kind.name, done[-1].last_updated_at,
                    done[-1].last_id, batch.checked_count, batch.inserted_count, now)
        self._report(batch, kind.cls)
        return batch

    async def _check(self, conn: asyncpg.Connection, kind: Kind, at: dt.datetime, last_id: int,
                     limit: dt.datetime, now: dt.datetime) -> list[Checked]:
        """Check the next batch after (at, last_id) in one statement; if a stored value
        cannot be read (SQLSTATE class 22), check them one at a time instead, raising the
        unreadable ones as wrong (each check in a savepoint)."""
        size = self._settings.sweep_batch_max
        try:
            async with conn.transaction():
                return [_checked(await conn.fetchrow(kind.sql, at, last_id, limit, size, now))]
        except asyncpg.DataError:
            pass
        done: list[Checked] = []
        for _ in range(size):
            try:
                async with conn.transaction():
                    one = _checked(await conn.fetchrow(kind.sql, at, last_id, limit, 1, now))
            except asyncpg.DataError as exc:
                one = await self._unreadable(conn, kind, at, last_id, limit, now, exc)
            if one is None or not one.checked_count:
                break
            done.append(one)
            at, last_id = one.last_updated_at, one.last_id
        return done

    @staticmethod
    async def _unreadable(conn: asyncpg.Connection, kind: Kind, at: dt.datetime, last_id: int,
                          limit: dt.datetime, now: dt.datetime,
                          exc: asyncpg.DataError) -> Checked | None:
        message = str(exc)[:UNREADABLE_MESSAGE_LEN_MAX]
        row = await conn.fetchrow(kind.unreadable_sql, at, last_id, limit, now,
                                  f"cannot be checked: {message}")
        if row is None:
            return None
        log.warning("reconciliation sweep: a %s cannot be checked: %s", kind.name, message,
                    extra={"kind": kind.name, "item_id": row["last_id"]})
        return Checked(row["last_updated_at"], row["last_id"], 1, 1, row["inserted"],
                       tuple(row["inserted_ids"]))

    @staticmethod
    def _report(batch: BatchOutcome, cls: MatchClass) -> None:
        metrics.RECON_SWEEP_CHECKED.labels(batch.kind).inc(batch.checked_count)
        if batch.inserted_count:
            metrics.RECON_SWEEP_DISCREPANCIES.labels(cls.name).inc(batch.inserted_count)
            log.warning("reconciliation sweep: %d %s discrepancies raised",
                        batch.inserted_count, cls.name,
                        extra={"kind": batch.kind, "checked_count": batch.checked_count,
                               "discrepancy_count": batch.inserted_count})


def _checked(row: asyncpg.Record) -> Checked:
    return Checked(row["last_updated_at"], row["last_id"], row["checked_count"],
                   row["wrong_count"], row["inserted_count"], tuple(row["inserted_ids"]))
