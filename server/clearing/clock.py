"""The one clock. Code that needs the time takes a Clock, so tests can move it."""

from __future__ import annotations

import datetime as dt
import time


class Clock:
    """Wall-clock time in UTC and a monotonic timer."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock(Clock):
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = start
        self._mono = 0.0

    def now(self) -> dt.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, delta: dt.timedelta) -> None:
        self._now += delta
        self._mono += delta.total_seconds()
