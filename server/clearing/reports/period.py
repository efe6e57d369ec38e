"""A report's period: whole local days of the platform's time zone, and the UTC ranges of
the days that the roll-ups do not hold (read from the raw rows)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from clearing.errors import invariant
from clearing.limits import DEFAULT_TIME_ZONE, REPORT_DAYS_MAX

# Platforms have no time zone of their own (no column says one); every platform's report
# days are days of this zone, the one default of payout configurations and counters.
# docs/reports.md says so.
REPORT_TIME_ZONE = DEFAULT_TIME_ZONE


def platform_time_zone(platform_id: int) -> str:
    """The time zone a platform's report days are in (today the same for every platform)."""
    del platform_id
    return REPORT_TIME_ZONE


def day_start(day: dt.date, zone: str) -> dt.datetime:
    """The instant (UTC) a local day begins."""
    local = dt.datetime.combine(day, dt.time(0), ZoneInfo(zone))
    return local.astimezone(dt.timezone.utc)


def local_day(at: dt.datetime, zone: str) -> dt.date:
    return at.astimezone(ZoneInfo(zone)).date()


@dataclass(frozen=True, slots=True)
class Period:
    """From `first` to `last` (both included), local days of `zone`."""

    first: dt.date
    last: dt.date
    zone: str

    def __post_init__(self) -> None:
        invariant(self.first <= self.last, "a period ends before it starts")
        invariant((self.last - self.first).days < REPORT_DAYS_MAX, "a period beyond the maximum")

    @property
    def start(self) -> dt.datetime:
        return day_start(self.first, self.zone)

    @property
    def end(self) -> dt.datetime:
        """The instant after the period (exclusive)."""
        return day_start(self.last + dt.timedelta(days=1), self.zone)


# A range of raw rows to read: [lo, hi), hi None = no end.
Range = tuple[dt.datetime, "dt.datetime | None"]


def unrolled_ranges(first: dt.date, last: dt.date | None, rolled: set[dt.date],
                    zone: str) -> list[Range]:
    """The UTC ranges of the days from `first` to `last` (None: with no end) that are not
    in `rolled`, consecutive days merged. Days after the last rolled day form one range."""
    end_day = last if last is not None else max(rolled, default=first - dt.timedelta(days=1))
    ranges: list[Range] = []
    run_start: dt.date | None = None
    day = first
    while day <= end_day:
        if day in rolled:
            if run_start is not None:
                ranges.append((day_start(run_start, zone), day_start(day, zone)))
                run_start = None
        elif run_start is None:
            run_start = day
        day += dt.timedelta(days=1)
    if last is None:
        tail = run_start if run_start is not None else day
        ranges.append((day_start(tail, zone), None))
    elif run_start is not None:
        ranges.append((day_start(run_start, zone), day_start(day, zone)))
    return ranges
