"""Payout schedules: storing them, the business-day calendar's table, and the Scheduler that
sweeps available balances into payouts when they are due (the cycles are described in
`clearing.payout.calendar`).

Each run happens once, even with several server processes: the scheduler claims one due
schedule row at a time with `FOR UPDATE SKIP LOCKED` (another process skips it), makes the
payout through `service.create_payout` with a request id derived from the run
(`schedule:{account_id}:{due time}`), then moves `next_run_at` on and commits. The payout
commits first (through the ledger writer); after a crash between the two commits the row is
due again and the replay finds the payout its request id already made: at most one payout
per run.

What a run sweeps: the account's available balance (for T+1: less what was credited since
the cutoff, see `calendar.t_plus_1_cutoff`), at most the platform's maximum per payout, when
it is at least max(the schedule's minimum, the platform's minimum payout, 1 minor unit).
Below that nothing happens and the run is spent. A business-rule refusal of the payout (no
bank account, KYC, frozen account, limits...) is recorded on the row (`last_error`) and the
run is spent too (for D0: the account is tried again `d0_retry_s` later); it never stops the
sweep of other accounts. A transient error (writer overloaded or shutting down) leaves the
row due. Missed runs (the server was down) collapse into one: the next run is computed
after the time the late run was made. A calendar with no business day within 31 days makes
no payout: the run is recorded CALENDAR_NO_BUSINESS_DAY and tried again a day later.

Cost: a T+1 run sums the account's credits since its cutoff (an index scan of the account's
credits, `transfers_credit_idx`); the other cycles read the account row only.

Settings: `clearing.config.SchedulerSettings` (CLEARING_PAYOUT_SCHEDULER,
CLEARING_PAYOUT_SCHEDULE_*, CLEARING_PAYOUT_RUN_HOUR, CLEARING_CALENDAR_REFRESH_S,
CLEARING_PAYOUT_D0_RETRY_S; the configuration table of docs/operations.md).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import asyncpg

from clearing import audit
from clearing.config import SchedulerSettings
from clearing.errors import ClearingError, ResourceExhausted, Unavailable
from clearing.ledger.model import Mode
from clearing.limits import CALENDAR_DAYS_MAX, DEFAULT_TIME_ZONE
from clearing.payout import service, store
from clearing.payout.calendar import (BusinessCalendar, NoBusinessDay, PayoutCycle, ScheduleSpec,
                                      next_run, t_plus_1_cutoff)
from clearing.payout.model import SCHEDULER, PayoutOrigin
from clearing.reasons import Reason
from clearing.tasks import Periodic

log = logging.getLogger("clearing.payout.schedule")

CALENDAR_PAST_DAYS = 400
CALENDAR_FUTURE_DAYS = 800


@dataclass(frozen=True, slots=True)
class Schedule:
    """A payout_schedules row with its account's currency."""

    account_id: int
    platform_id: int
    cycle: PayoutCycle
    weekday: int
    month_day: int
    min_amount_minor: int
    time_zone: str
    currency_code: str
    next_run_at: dt.datetime | None
    last_run_at: dt.datetime | None
    last_payout_id: int
    last_error: str
    updated_at: dt.datetime

    @property
    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(self.cycle, self.weekday, self.month_day, self.time_zone)


# ---- calendar -------------------------------------------------------------------------------

async def load_calendar(conn, around: dt.date) -> BusinessCalendar:
    """The calendar's exceptions from CALENDAR_PAST_DAYS before `around` to
    CALENDAR_FUTURE_DAYS after it (at most CALENDAR_DAYS_MAX rows)."""
    rows = await conn.fetch(
        "SELECT day, business FROM calendar_days WHERE day BETWEEN $1 AND $2"
        " ORDER BY day LIMIT $3", around - dt.timedelta(days=CALENDAR_PAST_DAYS),
        around + dt.timedelta(days=CALENDAR_FUTURE_DAYS), CALENDAR_DAYS_MAX)
    if len(rows) == CALENDAR_DAYS_MAX:
        log.warning("calendar window holds %d exceptions or more; later ones ignored",
                    CALENDAR_DAYS_MAX)
    return BusinessCalendar({r["day"]: r["business"] for r in rows})


async def set_calendar_day(conn, day: dt.date, business: bool, note: str = "") -> None:
    """Mark a day a holiday (business=False) or a make-up working day (business=True)."""
    await conn.execute(
        "INSERT INTO calendar_days (day, business, note) VALUES ($1, $2, $3)"
        " ON CONFLICT (day) DO UPDATE SET business = EXCLUDED.business,"
        " note = EXCLUDED.note, updated_at = now()", day, business, note)


async def unset_calendar_day(conn, day: dt.date) -> bool:
    """Back to the default (Monday-Friday); whether the day had an exception."""
    return await conn.fetchval("DELETE FROM calendar_days WHERE day = $1 RETURNING true",
                               day) is not None


async def calendar_days(conn, start: dt.date, end: dt.date) -> list[tuple[dt.date, bool, str]]:
    rows = await conn.fetch("SELECT day, business, note FROM calendar_days WHERE day BETWEEN"
                            " $1 AND $2 ORDER BY day LIMIT $3", start, end, CALENDAR_DAYS_MAX)
    return [(r["day"], r["business"], r["note"]) for r in rows]


class CalendarCache:
    """The calendar as the scheduler uses it: reloaded when older than `refresh_s` (by the
    clock's monotonic time), so a `clearing calendar set` reaches every process."""

    def __init__(self, pool: asyncpg.Pool, clock, refresh_s: int) -> None:
        self._pool = pool
        self._clock = clock
        self._refresh_s = refresh_s
        self._calendar: BusinessCalendar | None = None
        self._loaded_at = 0.0

    async def get(self) -> BusinessCalendar:
        now = self._clock.monotonic()
        if self._calendar is None or now - self._loaded_at >= self._refresh_s:
            async with self._pool.acquire() as conn:
                self._calendar = await load_calendar(conn, self._clock.now().date())
            self._loaded_at = now
        return self._calendar

    def invalidate(self) -> None:
        self._calendar = None


# ---- schedules ------------------------------------------------------------------------------

_SQL_SCHEDULE = """
SELECT s.account_id, s.platform_id, s.cycle, s.weekday, s.month_day, s.min_amount_minor,
       s.time_zone, a.currency_code, s.next_run_at, s.last_run_at, s.last_payout_id,
       s.last_error, s.updated_at
FROM payout_schedules s JOIN accounts a USING (account_id)
WHERE s.account_id = $1 AND s.platform_id = $2
"""


def _schedule(r) -> Schedule:
    return Schedule(r["account_id"], r["platform_id"], PayoutCycle(r["cycle"]), r["weekday"],
                    r["month_day"], r["min_amount_minor"], r["time_zone"],
                    r["currency_code"].strip(), r["next_run_at"], r["last_run_at"],
                    r["last_payout_id"] or 0, r["last_error"], r["updated_at"])


async def get_schedule(conn, platform_id: int, account_id: int) -> Schedule | None:
    row = await conn.fetchrow(_SQL_SCHEDULE, account_id, platform_id)
    return None if row is None else _schedule(row)


_SQL_UPSERT = """
INSERT INTO payout_schedules (account_id, platform_id, cycle, weekday, month_day,
                              min_amount_minor, time_zone, next_run_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (account_id) DO UPDATE SET
  cycle = EXCLUDED.cycle, weekday = EXCLUDED.weekday, month_day = EXCLUDED.month_day,
  min_amount_minor = EXCLUDED.min_amount_minor, time_zone = EXCLUDED.time_zone,
  next_run_at = EXCLUDED.next_run_at, last_error = '', updated_at = EXCLUDED.updated_at
"""


async def save_schedule(conn, *, platform_id: int, account_id: int, spec: ScheduleSpec,
                        min_amount_minor: int, now: dt.datetime, calendar: BusinessCalendar,
                        run_hour: int, actor: audit.Actor) -> None:
    """Insert or replace an account's schedule; its first run is next_run(after=now).
    Recorded in the audit trail (run it in the caller's transaction)."""
    before = await get_schedule(conn, platform_id, account_id)
    first = next_run(spec, now, calendar, run_hour=run_hour)
    await conn.execute(_SQL_UPSERT, account_id, platform_id, int(spec.cycle), spec.weekday,
                       spec.month_day, min_amount_minor, spec.time_zone, first, now)

    def doc(cycle: PayoutCycle, weekday: int, month_day: int, minimum: int, zone: str) -> dict:
        return {"cycle": cycle.name, "weekday": weekday, "month_day": month_day,
                "min_amount_minor": minimum, "time_zone": zone}

    await audit.record(
        conn, actor, "SetPayoutSchedule", f"payout_schedule:{account_id}",
        before=None if before is None else doc(before.cycle, before.weekday, before.month_day,
                                               before.min_amount_minor, before.time_zone),
        after={**doc(spec.cycle, spec.weekday, spec.month_day, min_amount_minor,
                     spec.time_zone), "next_run_at": first})


# ---- the scheduler --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What one due run did: the payout it made (0: none) or why not (`error`: a refusal's
    reason; `skipped`: BELOW_MINIMUM or ALREADY_DONE)."""

    platform_id: int
    account_id: int
    due_at: dt.datetime
    payout_id: int = 0
    amount_minor: int = 0
    error: str = ""
    skipped: str = ""


# A due schedule, oldest due first. D0 rows are due only once their available balance
# reaches the threshold (else every idle D0 account would be claimed at every tick).
_SQL_CLAIM = f"""
SELECT s.account_id, s.platform_id, s.cycle, s.weekday, s.month_day, s.min_amount_minor,
       s.time_zone, a.currency_code, s.next_run_at,
       a.credits_posted - a.debits_posted - a.debits_pending - a.frozen AS available
FROM payout_schedules s JOIN accounts a USING (account_id)
WHERE s.next_run_at <= $1
  AND (s.cycle <> {PayoutCycle.D0:d}
       OR a.credits_posted - a.debits_posted - a.debits_pending - a.frozen
       >= GREATEST(s.min_amount_minor, 1, COALESCE(
            (SELECT c.min_amount_minor FROM payout_configs c
             WHERE c.platform_id = s.platform_id AND c.currency_code = a.currency_code), $2)))
ORDER BY s.next_run_at
LIMIT 1
FOR UPDATE OF s SKIP LOCKED
"""
_SQL_CREDITED_SINCE = f"""
SELECT COALESCE(sum(amount), 0)::bigint FROM transfers
WHERE credit_account_id = $1 AND mode IN ({Mode.IMMEDIATE:d}, {Mode.POST_PENDING:d})
  AND created_at >= $2
"""
_SQL_DONE = """
UPDATE payout_schedules SET next_run_at = $2, last_run_at = $3,
       last_payout_id = COALESCE($4, last_payout_id), last_error = $5
WHERE account_id = $1
"""


class _Transient(Exception):
    """The run could not be made now (writer overloaded or stopping): leave it due."""


def run_request_id(account_id: int, due_at: dt.datetime) -> str:
    """The request id of the payout of one run: the same after a crash, so a replay finds
    the payout instead of making another."""
    return f"schedule:{account_id}:{due_at.astimezone(dt.timezone.utc).isoformat()}"


class Scheduler(Periodic):
    """Sweeps due schedules every `settings.tick_s` (see the module docstring). `tick()` is
    one sweep, callable directly (tests)."""

    def __init__(self, deps: service.PayoutDeps, settings: SchedulerSettings, *,
                 calendar_pool: asyncpg.Pool | None = None) -> None:
        self._deps = deps
        self._settings = settings
        # The business calendar is the core's (home pod); the schedules, deps.pool's.
        self.calendar = CalendarCache(calendar_pool or deps.pool, deps.clock,
                                      settings.calendar_refresh_s)
        super().__init__()

    task_name = "payout-scheduler"
    failure = "payout schedule sweep failed"

    @property
    def interval_s(self) -> float:
        return self._settings.tick_s

    async def tick(self) -> list[RunOutcome]:
        """Run due schedules, one transaction each, at most `batch_max`."""
        calendar = await self.calendar.get()
        outcomes: list[RunOutcome] = []
        async with self._deps.pool.acquire() as conn:
            for _ in range(self._settings.batch_max):
                if self._stopping.is_set():
                    break
                try:
                    async with conn.transaction():
                        now = self._deps.clock.now()
                        row = await conn.fetchrow(_SQL_CLAIM, now,
                                                  self._deps.settings.min_amount_minor)
                        if row is None:
                            break
                        outcome = await self._run(conn, row, now, calendar)
                except _Transient as exc:
                    log.warning("payout schedule run postponed: %s", exc)
                    break
                outcomes.append(outcome)
        return outcomes

    async def _run(self, conn, row, now: dt.datetime, calendar: BusinessCalendar) -> RunOutcome:
        account_id = row["account_id"]
        spec = ScheduleSpec(PayoutCycle(row["cycle"]), row["weekday"], row["month_day"],
                            row["time_zone"])
        due_at: dt.datetime = row["next_run_at"]
        try:  # every calendar computation before the payout: a bad calendar makes none
            cutoff = (t_plus_1_cutoff(due_at, spec.time_zone, calendar)
                      if spec.cycle is PayoutCycle.T_PLUS_1 else None)
            upcoming = (None if spec.cycle is PayoutCycle.D0 else
                        next_run(spec, max(now, due_at), calendar,
                                 run_hour=self._settings.run_hour))
        except NoBusinessDay as exc:  # a calendar without business days: retry tomorrow
            log.error("payout schedule of account %d: %s", account_id, exc)
            outcome = RunOutcome(row["platform_id"], account_id, due_at,
                                 error=Reason.CALENDAR_NO_BUSINESS_DAY)
            upcoming = now + dt.timedelta(days=1)
        else:
            outcome = await self._sweep(conn, row, due_at, run_request_id(account_id, due_at),
                                        cutoff)
        if spec.cycle is PayoutCycle.D0:
            # due again at the next tick (a later instant: a new request id), or after the
            # retry delay when refused
            upcoming = (now + dt.timedelta(seconds=self._settings.d0_retry_s) if outcome.error
                        else max(now, due_at + dt.timedelta(microseconds=1)))
        await conn.execute(_SQL_DONE, account_id, upcoming, now, outcome.payout_id or None,
                           outcome.error)
        log.info("payout schedule run", extra={
            "account_id": account_id, "due_at": due_at.isoformat(),
            "payout_id": outcome.payout_id, "amount_minor": outcome.amount_minor,
            "error": outcome.error, "skipped": outcome.skipped})
        return outcome

    async def _sweep(self, conn, row, due_at: dt.datetime, request_id: str,
                     cutoff: dt.datetime | None) -> RunOutcome:
        """Make the run's payout, or say why not. `cutoff`: T+1's (credits since then are
        left for the next run)."""
        account_id, platform_id = row["account_id"], row["platform_id"]
        prior = await store.payout_by_request(conn, platform_id, request_id)
        if prior is not None:  # a crash after the payout's commit: this run is done
            payout = prior[0]
            return RunOutcome(platform_id, account_id, due_at, payout.payout_id,
                              payout.amount_minor, skipped="ALREADY_DONE")
        currency = row["currency_code"].strip()
        available = row["available"]
        if cutoff is not None:
            available -= await conn.fetchval(_SQL_CREDITED_SINCE, account_id, cutoff)
        config = await store.load_config(conn, self._deps.settings, platform_id, currency)
        threshold = max(row["min_amount_minor"], config.min_amount_minor, 1)
        if available < threshold:
            return RunOutcome(platform_id, account_id, due_at, skipped="BELOW_MINIMUM")
        amount = min(available, config.max_amount_minor)
        try:
            payout = await service.create_payout(
                self._deps, platform_id=platform_id, account_id=account_id,
                amount_minor=amount, currency_code=currency, request_id=request_id,
                origin=int(PayoutOrigin.SCHEDULE), requested_by=SCHEDULER)
        except Unavailable as exc:
            raise _Transient(exc.message) from exc
        except ResourceExhausted as exc:
            if exc.reason == Reason.OVERLOADED:
                raise _Transient(exc.message) from exc
            return RunOutcome(platform_id, account_id, due_at, error=exc.reason)
        except ClearingError as exc:
            return RunOutcome(platform_id, account_id, due_at, error=exc.reason)
        return RunOutcome(platform_id, account_id, due_at, payout.payout_id,
                          payout.amount_minor)


__all__ = ["DEFAULT_TIME_ZONE", "Schedule", "Scheduler", "SchedulerSettings", "RunOutcome",
           "get_schedule", "save_schedule", "load_calendar", "set_calendar_day"]
