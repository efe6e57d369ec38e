"""The reports' daily roll-ups: an idempotent job that rolls each closed day of each platform
once (split legs per receiver and rule, posted movements per account, splits per channel),
and rolls a day again when rows arrive late.

- A day is rolled once it is closed: its end (local midnight of the platform's time zone)
  plus `rollup_grace_s` has passed. The open day (and any day not rolled yet) is read from
  the raw rows by the reports, so a report is exact at any time.
- One (platform, day) is rolled in one REPEATABLE READ transaction under the advisory
  lock of that (platform, day), taken before it: processes running the job at once never roll the same day
  together; one that finds the lock taken skips the day.
- What a roll read is recorded (`report_rollup_days`: count and highest id of the day's
  splits and transfers). A pass re-checks the last `rollup_recheck_days` rolled days and
  rolls again a day whose figures changed (a late row: a split stamped before midnight but
  committed after the roll, a restore); rolling a day whose figures have not changed does
  nothing, so running the job twice gives the same roll-ups.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass

import asyncpg

from clearing.clock import Clock
from clearing.config import ReportSettings
from clearing.limits import ROLLUP_DAYS_PER_PASS_MAX
from clearing.reports import sql
from clearing.reports.period import day_start, local_day, platform_time_zone
from clearing.tasks import Periodic

log = logging.getLogger(__name__)

_SQL_FINGERPRINT = """
SELECT s.split_count, s.split_id_max, t.transfer_count, t.transfer_id_max
FROM (SELECT count(*) AS split_count, coalesce(max(split_id), 0) AS split_id_max FROM splits
      WHERE platform_id = $1 AND created_at >= $2 AND created_at < $3) s,
     (SELECT count(*) AS transfer_count, coalesce(max(transfer_id), 0) AS transfer_id_max
      FROM transfers WHERE platform_id = $1 AND created_at >= $2 AND created_at < $3) t"""

_SQL_RECORDED = """
SELECT split_count, split_id_max, transfer_count, transfer_id_max FROM report_rollup_days
WHERE platform_id = $1 AND day = $2"""

_SQL_RECORD = """
INSERT INTO report_rollup_days (platform_id, day, time_zone, split_count, split_id_max,
                                transfer_count, transfer_id_max, roll_count, rolled_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8)
ON CONFLICT (platform_id, day) DO UPDATE SET
  time_zone = EXCLUDED.time_zone, split_count = EXCLUDED.split_count,
  split_id_max = EXCLUDED.split_id_max, transfer_count = EXCLUDED.transfer_count,
  transfer_id_max = EXCLUDED.transfer_id_max,
  roll_count = report_rollup_days.roll_count + 1, rolled_at = EXCLUDED.rolled_at"""

_TABLES = ("report_split_days", "report_account_days", "report_channel_days")


def _inserts(platform_id: int, day: dt.date, zone: str, lo: dt.datetime,
             hi: dt.datetime) -> list[sql.Query]:
    ranges = [(lo, hi)]
    legs = sql.Query(platform_id, day)
    legs.sql = (
        "INSERT INTO report_split_days (platform_id, day, currency_code, account_id,"
        " rule_set_name, rule_set_version, rule_name, leg_count, amount_minor)"
        " SELECT $1::bigint, $2::date, r.* FROM (" + sql.split_legs_raw(legs, "$1", ranges) + ") r")
    moves = sql.Query(platform_id, day)
    moves.sql = (
        "INSERT INTO report_account_days (platform_id, day, account_id, debit_count,"
        " debit_minor, credit_count, credit_minor)"
        " SELECT $1::bigint, $2::date, r.account_id, sum(r.debit_count), sum(r.debit_minor),"
        " sum(r.credit_count), sum(r.credit_minor) FROM ("
        + sql.account_moves_raw(moves, "$1", ranges, "'infinity'::timestamptz")
        + ") r GROUP BY r.account_id")
    channels = sql.Query(platform_id, day, zone)
    channels.sql = (
        "INSERT INTO report_channel_days (platform_id, day, channel, currency_code,"
        " split_count, amount_minor, channel_fee_minor)"
        " SELECT $1::bigint, $2::date, r.channel, r.currency_code, r.split_count, r.amount_minor,"
        " r.channel_fee_minor FROM (" + sql.channel_splits_raw(channels, "$1", "$3", ranges)
        + ") r")
    return [legs, moves, channels]


@dataclass(frozen=True, slots=True)
class RollOutcome:
    """What rolling one day did: `rolled` (written, first time or again), `fresh` (already
    rolled from the same rows: nothing written) or `busy` (another process holds it)."""

    outcome: str
    split_count: int = 0


async def roll_day(pool: asyncpg.Pool, clock: Clock, platform_id: int, day: dt.date, *,
                   timeout_s: float = ReportSettings().rollup_timeout_s) -> RollOutcome:
    """Roll one local day of one platform (idempotent; see the module docstring); each
    statement within `timeout_s` (a busy day's roll-up reads millions of rows)."""
    zone = platform_time_zone(platform_id)
    lo, hi = day_start(day, zone), day_start(day + dt.timedelta(days=1), zone)
    key = f"clearing.report-rollup:{platform_id}:{day}"
    async with pool.acquire() as conn:
        # the day's lock is taken before the transaction: its snapshot must begin after the
        # commit of a process that rolled the day meanwhile (taken inside, by its first
        # statement, the snapshot could predate that commit and the DELETE fail to serialize)
        if not await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key):
            return RollOutcome("busy")
        try:
            async with conn.transaction(isolation="repeatable_read"):
                seen = await conn.fetchrow(_SQL_FINGERPRINT, platform_id, lo, hi,
                                           timeout=timeout_s)
                recorded = await conn.fetchrow(_SQL_RECORDED, platform_id, day)
                if recorded is not None and tuple(recorded) == tuple(seen):
                    return RollOutcome("fresh", seen["split_count"])
                for table in _TABLES:
                    await conn.execute(
                        f"DELETE FROM {table} WHERE platform_id = $1 AND day = $2",
                        platform_id, day, timeout=timeout_s)
                for q in _inserts(platform_id, day, zone, lo, hi):
                    await conn.execute(q.sql, *q.args, timeout=timeout_s)
                await conn.execute(_SQL_RECORD, platform_id, day, zone, *seen, clock.now())
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
    return RollOutcome("rolled", seen["split_count"])


def last_closed_day(now: dt.datetime, zone: str, grace_s: int) -> dt.date:
    """The last local day that ended at least `grace_s` before `now`."""
    return local_day(now - dt.timedelta(seconds=grace_s), zone) - dt.timedelta(days=1)


async def due_days(pool: asyncpg.Pool, platform_id: int, created_at: dt.datetime,
                   now: dt.datetime, settings: ReportSettings) -> list[dt.date]:
    """The days a pass rolls for a platform: the closed days after its last rolled day (from
    the day it was created; at most ROLLUP_DAYS_PER_PASS_MAX), then the last
    `rollup_recheck_days` rolled days again (rolled only if their rows changed)."""
    zone = platform_time_zone(platform_id)
    closed = last_closed_day(now, zone, settings.rollup_grace_s)
    last = await pool.fetchval("SELECT max(day) FROM report_rollup_days WHERE platform_id = $1",
                               platform_id)
    first = last + dt.timedelta(days=1) if last else local_day(created_at, zone)
    days = []
    day = first
    while day <= closed and len(days) < ROLLUP_DAYS_PER_PASS_MAX:
        days.append(day)
        day += dt.timedelta(days=1)
    recent = await pool.fetch("SELECT day FROM report_rollup_days WHERE platform_id = $1"
                              " ORDER BY day DESC LIMIT $2", platform_id,
                              settings.rollup_recheck_days)
    days.extend(r["day"] for r in recent if r["day"] <= closed)
    return days


async def roll_due(pool: asyncpg.Pool, clock: Clock, settings: ReportSettings,
                   now: dt.datetime | None = None,
                   stopping: asyncio.Event | None = None) -> dict[str, int]:
    """One pass over every platform (until `stopping` is set); counts of days per outcome."""
    now = now or clock.now()
    counts: dict[str, int] = {}
    for row in await pool.fetch("SELECT platform_id, created_at FROM platforms"
                                " ORDER BY platform_id"):
        for day in await due_days(pool, row["platform_id"], row["created_at"], now, settings):
            if stopping is not None and stopping.is_set():
                return counts
            outcome = await roll_day(pool, clock, row["platform_id"], day,
                                     timeout_s=settings.rollup_timeout_s)
            counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
    return counts


class RollupJob(Periodic):
    """The background task of one process: a pass, then `rollup_interval_s` of rest."""

    def __init__(self, pool: asyncpg.Pool, clock: Clock, settings: ReportSettings) -> None:
        self._pool, self._clock, self._settings = pool, clock, settings
        super().__init__()

    task_name = "report-rollup"
    failure = "report roll-up pass failed"

    @property
    def interval_s(self) -> float:
        return self._settings.rollup_interval_s

    async def tick(self) -> dict:
        """One pass: every due day rolled (stops between days once `stop()` is asked)."""
        counts = await roll_due(self._pool, self._clock, self._settings,
                                stopping=self._stopping)
        if counts.get("rolled"):
            log.info("report roll-up pass", extra={"days": counts})
        return counts
