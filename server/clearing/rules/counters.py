"""Running counters for tiered shares (a supplier's orders this month, a host's GMV).

Counters live in Redis, one integer per (platform, counter, subject, period), under the
platform's hash tag (clearing/rediskeys.py: a platform's counters are in one slot of a Redis
Cluster; a server starting adds the counters of the untagged layout into these). A split
*reserves* its contribution with INCRBY before it is evaluated, so every order gets its own
exact rank ("the 1,000th order of the month") even when many are split at once, and the
value recorded in the split includes the order itself. If the split then does not commit,
the reservation is undone (DECRBY).

Redis down (documented degradation): the counter's value is the last one this process knew
(0 if none) plus the order's contribution, the reading is marked FALLBACK, and the split
goes on; a tier may then apply late (never early, since the process's value can only lag the
real one), and the split records that it used a fallback value so it can be reviewed.
Fallback contributions are not written to Redis later: counters are a pricing aid, and the
splits table holds every order for an exact recount.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from enum import IntEnum
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis
from prometheus_client import Counter as PromCounter

from clearing import rediskeys
from clearing.limits import DEFAULT_TIME_ZONE

log = logging.getLogger("clearing.rules.counters")

REDIS_OP_TIMEOUT_S = 0.2
# A period's key outlives the period by this much (late orders, reports), then expires.
PERIOD_GRACE = dt.timedelta(days=7)
LAST_KNOWN_MAX = 100_000

FALLBACKS = PromCounter("clearing_counter_fallbacks_total",
                        "Counter readings served from memory because Redis was unreachable")


class Period(IntEnum):
    """Equal to proto CounterPeriod."""

    DAY = 1
    WEEK = 2
    MONTH = 3
    YEAR = 4
    LIFETIME = 5


class Source(IntEnum):
    """Equal to proto CounterSource."""

    LIVE = 1
    OVERRIDE = 2
    FALLBACK = 3


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """One counter an order contributes to: `delta` is 1 (order count) or the amount."""

    platform_id: int
    name: str
    subject: str
    period: Period
    time_zone: str
    delta: int
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class Reading:
    """A counter's value including this order, and where it came from."""

    spec: CounterSpec
    period_start: dt.datetime | None
    value: int
    source: Source
    key: str


def period_start(period: Period, at: dt.datetime, time_zone: str) -> dt.datetime | None:
    """Start of the period holding `at`, in the counter's time zone (None for LIFETIME)."""
    if period is Period.LIFETIME:
        return None
    local = at.astimezone(ZoneInfo(time_zone or DEFAULT_TIME_ZONE))
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAY:
        return day
    if period is Period.WEEK:
        return day - dt.timedelta(days=day.weekday())
    if period is Period.MONTH:
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def _period_end(period: Period, start: dt.datetime) -> dt.datetime:
    if period is Period.DAY:
        return start + dt.timedelta(days=1)
    if period is Period.WEEK:
        return start + dt.timedelta(days=7)
    if period is Period.MONTH:
        return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return start.replace(year=start.year + 1)


class Counters:
    """See the module docstring."""

    def __init__(self, redis: aioredis.Redis | None, prefix: str, *,
                 op_timeout_s: float = REDIS_OP_TIMEOUT_S) -> None:
        self._redis = redis
        self._prefix = prefix
        self._op_timeout_s = op_timeout_s
        self._last: dict[str, int] = {}

    def key(self, spec: CounterSpec) -> tuple[str, dt.datetime | None]:
        start = period_start(spec.period, spec.at, spec.time_zone)
        bucket = start.date().isoformat() if start else "lifetime"
        return (rediskeys.counter(self._prefix, spec.platform_id, spec.name, spec.subject,
                                  bucket), start)

    async def reserve(self, specs: list[CounterSpec]) -> list[Reading]:
        """Add each order's contribution; the readings include it."""
        keyed = [(spec, *self.key(spec)) for spec in specs]
        values = await self._pipeline(keyed, undo=False)
        return self._readings(keyed, values)

    async def peek(self, specs: list[CounterSpec]) -> list[Reading]:
        """What reserve() would read, without adding anything (PreviewSplit)."""
        keyed = [(spec, *self.key(spec)) for spec in specs]
        raw = await self._call(lambda r: self._get_all(r, [k for _, k, _ in keyed])) \
            if keyed else []
        values = None if raw is None else [int(v or 0) + s.delta
                                           for (s, _, _), v in zip(keyed, raw)]
        return self._readings(keyed, values)

    async def undo(self, readings: list[Reading]) -> None:
        """Take back the contributions of a split that did not commit (LIVE ones only)."""
        live = [r for r in readings if r.source is Source.LIVE]
        if live:
            await self._pipeline([(r.spec, r.key, r.period_start) for r in live], undo=True)

    def _readings(self, keyed, values: list[int] | None) -> list[Reading]:
        out = []
        for i, (spec, key, start) in enumerate(keyed):
            if values is None:
                FALLBACKS.inc()
                value, source = self._last.get(key, 0) + spec.delta, Source.FALLBACK
            else:
                value, source = values[i], Source.LIVE
            self._remember(key, value)
            out.append(Reading(spec, start, value, source, key))
        return out

    def _remember(self, key: str, value: int) -> None:
        if len(self._last) >= LAST_KNOWN_MAX and key not in self._last:
            self._last.clear()
        self._last[key] = value

    @staticmethod
    async def _get_all(r: aioredis.Redis, keys: list[str]) -> list:
        # GETs in a pipeline rather than MGET: the keys may be of several platforms, so of
        # several slots of a Redis Cluster
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return await pipe.execute()

    async def _pipeline(self, keyed, *, undo: bool) -> list[int] | None:
        if not keyed:
            return []

        async def run(r: aioredis.Redis) -> list:
            pipe = r.pipeline(transaction=False)
            for spec, key, start in keyed:
                pipe.incrby(key, -spec.delta if undo else spec.delta)
                if start is not None:
                    # kept until its period's end and a grace; a late order of a period
                    # past that (its key expired) keeps it a grace from now: an expiry in
                    # the past deleted the key at once and every such order ranked 1
                    end = _period_end(spec.period, start) + PERIOD_GRACE
                    pipe.expireat(key, max(int(end.timestamp()),
                                           int(time.time() + PERIOD_GRACE.total_seconds())))
            return await pipe.execute()

        results = await self._call(run)
        if results is None:
            return None
        step = [2 if start is not None else 1 for _, _, start in keyed]
        values, i = [], 0
        for n in step:
            values.append(int(results[i]))
            i += n
        return values

    async def _call(self, op):
        if self._redis is None:
            return None
        try:
            return await asyncio.wait_for(op(self._redis), self._op_timeout_s)
        except (aioredis.RedisError, OSError, asyncio.TimeoutError) as exc:
            log.warning("counter store unreachable (%r): using last known values", exc)
            return None
