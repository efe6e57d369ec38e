"""Business days and the next run of a payout schedule (pure: no I/O, no clock).

Business days are Monday to Friday, except the calendar's holidays, plus its make-up
working days (China moves weekends around its holidays: a Saturday or Sunday may be a
working day). The exceptions live in the `calendar_days` table (`clearing calendar set`);
`BusinessCalendar` is an immutable snapshot of them.

`next_run(schedule, after, calendar)` is when a schedule's next sweep is due, strictly after
`after`, at the run hour (default 02:00) local time of the schedule's IANA time zone:

- D0: `after` itself: due at every scheduler tick (the scheduler sweeps a D0 account
  only when its available balance reaches the minimum).
- T+1: the run hour of the next business day. The sweep of business day D takes what was
  available at the end of the business day before D (`t_plus_1_cutoff`): the available
  balance less everything credited since. So funds of business day T are swept on the next
  business day, and funds of a weekend or holiday with those of the business day after it.
- WEEKLY(weekday): that ISO weekday (1 Monday .. 7 Sunday) of each week, moved to the next
  business day when it is not one.
- MONTHLY(month_day): that day of each month; 29 to 31 fall back to the month's last day in
  shorter months (Jan 31 -> Feb 28 in 2027, Feb 29 in 2028), then moved to the next
  business day when it is not one.
- MANUAL: None (never).

A moved day never runs twice: when two nominal days move to the same business day (a long
holiday), that day has one run. The calendar must have a business day in any
`SHIFT_DAYS_MAX` consecutive days (else NoBusinessDay).
"""

from __future__ import annotations

import calendar as _cal
import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from zoneinfo import ZoneInfo

from clearing.config import RUN_HOUR_DEFAULT
from clearing.errors import InvariantViolation

DEFAULT_TIME_ZONE = "Asia/Shanghai"
# Longest run of consecutive non-business days the calendar may have (China's longest
# holiday is 8 days); also how far back a moved day is looked for.
SHIFT_DAYS_MAX = 31


class NoBusinessDay(ValueError):
    """The calendar has no business day within SHIFT_DAYS_MAX days of a date."""


class PayoutCycle(IntEnum):
    """Equal to proto PayoutCycle."""

    D0 = 1
    T_PLUS_1 = 2
    WEEKLY = 3
    MONTHLY = 4
    MANUAL = 5


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What next_run needs of a schedule. weekday: ISO 1-7 for WEEKLY, else 0; month_day:
    1-31 for MONTHLY, else 0."""

    cycle: PayoutCycle
    weekday: int = 0
    month_day: int = 0
    time_zone: str = DEFAULT_TIME_ZONE


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """Monday-Friday plus exceptions: `overrides[day]` is True for a make-up working day,
    False for a holiday."""

    overrides: Mapping[dt.date, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, holidays: tuple[dt.date, ...] | list[dt.date] = (),
           workdays: tuple[dt.date, ...] | list[dt.date] = ()) -> "BusinessCalendar":
        days = {d: False for d in holidays}
        days.update({d: True for d in workdays})
        return cls(MappingProxyType(days))

    def is_business_day(self, day: dt.date) -> bool:
        found = self.overrides.get(day)
        return day.isoweekday() <= 5 if found is None else found

    def on_or_after(self, day: dt.date) -> dt.date:
        """The first business day on or after `day`."""
        for i in range(SHIFT_DAYS_MAX + 1):
            candidate = day + dt.timedelta(days=i)
            if self.is_business_day(candidate):
                return candidate
        raise NoBusinessDay(f"no business day within {SHIFT_DAYS_MAX} days of {day}")

    def before(self, day: dt.date) -> dt.date:
        """The last business day strictly before `day`."""
        for i in range(1, SHIFT_DAYS_MAX + 2):
            candidate = day - dt.timedelta(days=i)
            if self.is_business_day(candidate):
                return candidate
        raise NoBusinessDay(f"no business day within {SHIFT_DAYS_MAX} days before {day}")


def month_day_in(year: int, month: int, month_day: int) -> dt.date:
    """`month_day` of that month, or the month's last day when it is shorter."""
    return dt.date(year, month, min(month_day, _cal.monthrange(year, month)[1]))


def run_at(day: dt.date, time_zone: str, run_hour: int) -> dt.datetime:
    """The run hour of a local day, in UTC. A run hour skipped by a DST change resolves as
    zoneinfo does (fold=0: the offset before the change)."""
    local = dt.datetime.combine(day, dt.time(run_hour), tzinfo=ZoneInfo(time_zone))
    return local.astimezone(dt.timezone.utc)


def _nominal_days(spec: ScheduleSpec, start: dt.date) -> Iterator[dt.date]:
    """The cycle's days before moving to business days, ascending, from `start` on."""
    if spec.cycle is PayoutCycle.T_PLUS_1:
        day = start
        while True:
            yield day
            day += dt.timedelta(days=1)
    elif spec.cycle is PayoutCycle.WEEKLY:
        day = start + dt.timedelta(days=(spec.weekday - start.isoweekday()) % 7)
        while True:
            yield day
            day += dt.timedelta(days=7)
    elif spec.cycle is PayoutCycle.MONTHLY:
        year, month = start.year, start.month
        while True:
            day = month_day_in(year, month, spec.month_day)
            if day >= start:
                yield day
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    else:
        raise ValueError(f"{spec.cycle.name} has no days")


def next_run(spec: ScheduleSpec, after: dt.datetime, calendar: BusinessCalendar, *,
             run_hour: int = RUN_HOUR_DEFAULT) -> dt.datetime | None:
    """When the schedule's next sweep is due (UTC), strictly after `after` (aware) except for
    D0 (`after`: due now); None for MANUAL. See the module docstring."""
    if after.tzinfo is None:
        raise ValueError("after must be an aware datetime")
    if spec.cycle is PayoutCycle.MANUAL:
        return None
    if spec.cycle is PayoutCycle.D0:
        return after
    local_day = after.astimezone(ZoneInfo(spec.time_zone)).date()
    # A nominal day up to SHIFT_DAYS_MAX before `after` may have moved to a day after it.
    start = local_day - dt.timedelta(days=SHIFT_DAYS_MAX)
    for nominal in _nominal_days(spec, start):
        run = run_at(calendar.on_or_after(nominal), spec.time_zone, run_hour)
        if run > after:  # moved days are non-decreasing: the first one after is the next
            return run
    raise InvariantViolation("unreachable: the nominal days are endless")


def t_plus_1_cutoff(run: dt.datetime, time_zone: str, calendar: BusinessCalendar) -> dt.datetime:
    """For the T+1 sweep due at `run`: the end of the business day before the run's local
    day (local midnight after it, in UTC). Funds credited from then on wait for the next
    run."""
    zone = ZoneInfo(time_zone)
    previous = calendar.before(run.astimezone(zone).date())
    end = dt.datetime.combine(previous + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
    return end.astimezone(dt.timezone.utc)
