"""Where a process finds the active compiled plan of a rule set: L1 memory, L2 Redis, L3
PostgreSQL (the truth).

- Published versions are immutable, so a plan cached under (platform, name, version) never
  goes stale: L1 keeps up to `plans_max` of them (least recently used dropped first).
- Redis cannot change where money goes. A plan read from Redis enters L1 only if its
  SHA-256 equals the plan hash PostgreSQL recorded for that version at publish (one small
  query when a plan enters L1, never per split); on a mismatch the Redis copy is deleted,
  an alert is recorded (split_alerts, reason PLAN_CACHE_MISMATCH) and logged, and
  PostgreSQL's plan is used.
- The *active version* of a rule set is the only thing that changes, and PostgreSQL is its
  only authority: L1 remembers it for at most `pointer_ttl_s` (1 s) and then reads it
  from PostgreSQL again (one primary-key read per rule set and second per process), so an
  activation reaches every process within a second even if it hears nothing. Redis holds
  no pointer; it only carries the invalidation message an activation publishes, on which
  every process drops its pointer at once (a forged message only causes a re-read).
- Redis down or restarting: plans come from PostgreSQL (once per version), the listener
  reconnects with backoff, and nothing fails because of Redis. Redis errors are logged
  and counted, never raised to a caller.

The cache is generic over the plan: it stores the bytes the compiler produced and decodes
them with the `decode` function it is given.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, TypeVar

import redis.asyncio as aioredis
from prometheus_client import Counter

from clearing import rediskeys
from clearing.reasons import Reason
from clearing.tasks import cancel_and_wait

log = logging.getLogger("clearing.rules.cache")

P = TypeVar("P")

POINTER_TTL_S = 1.0
PLANS_MAX = 1024
REDIS_OP_TIMEOUT_S = 0.2
LISTEN_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)
CHANNEL = "rules:invalidate"
MISMATCH_REASON = Reason.PLAN_CACHE_MISMATCH

LOOKUPS = Counter("clearing_plan_lookups_total", "Plan lookups by the layer that answered",
                  ["layer"])
MISMATCHES = Counter("clearing_plan_cache_mismatches_total",
                     "Plans read from Redis that did not match PostgreSQL's plan hash")
REDIS_ERRORS = Counter("clearing_plan_cache_redis_errors_total",
                       "Redis failures of the plan cache (answered from PostgreSQL instead)")


@dataclass(frozen=True, slots=True)
class ActivePlan(Generic[P]):
    """The active version of a rule set and its decoded plan."""

    version: int
    plan: P


class Source:
    """The truth in PostgreSQL: what the cache asks when memory and Redis have nothing."""

    async def active_version(self, platform_id: int, name: str) -> int | None:
        raise NotImplementedError

    async def plan_bytes(self, platform_id: int, name: str, version: int) -> bytes | None:
        raise NotImplementedError

    async def plan_sha256(self, platform_id: int, name: str, version: int) -> bytes | None:
        """The SHA-256 of the version's plan recorded at publish."""
        raise NotImplementedError

    async def alert(self, platform_id: int, reason: str, message: str) -> None:
        """Record an alert for the platform's operators."""
        raise NotImplementedError


class PlanCache(Generic[P]):
    """See the module docstring."""

    def __init__(self, source: Source, decode: Callable[[bytes], P],
                 redis: aioredis.Redis | None, prefix: str, *,
                 pointer_ttl_s: float = POINTER_TTL_S, plans_max: int = PLANS_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._decode = decode
        self._redis = redis
        self._prefix = prefix
        self._pointer_ttl_s = pointer_ttl_s
        self._plans_max = plans_max
        self._clock = clock
        self._pointers: dict[tuple[int, str], tuple[float, int | None]] = {}
        self._plans: OrderedDict[tuple[int, str, int], P] = OrderedDict()
        self._listener: asyncio.Task | None = None
        self.subscribed = asyncio.Event()

    # ---- keys --------------------------------------------------------------------------

    def _plan_key(self, platform_id: int, name: str, version: int) -> str:
        return rediskeys.plan(self._prefix, platform_id, name, version)

    @property
    def channel(self) -> str:
        return self._prefix + CHANNEL

    # ---- lookups -----------------------------------------------------------------------

    async def active(self, platform_id: int, name: str) -> ActivePlan[P] | None:
        """The active plan of a rule set, or None if no version is active."""
        version = await self._active_version(platform_id, name)
        if version is None:
            return None
        return ActivePlan(version, await self.plan(platform_id, name, version))

    async def plan(self, platform_id: int, name: str, version: int) -> P:
        """A published version's plan (immutable, so cached without expiry)."""
        key = (platform_id, name, version)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            LOOKUPS.labels("memory").inc()
            return plan
        blob = await self._redis_call(lambda r: r.get(self._plan_key(*key)))
        layer = "redis"
        if blob is not None and not await self._matches(key, blob):
            blob = None
        if blob is None:
            layer = "postgres"
            blob = await self._source.plan_bytes(*key)
            if blob is None:
                raise LookupError(f"rule set {name!r} version {version} does not exist")
            await self._redis_call(lambda r: r.set(self._plan_key(*key), blob))
        LOOKUPS.labels(layer).inc()
        plan = self._decode(blob)
        self._plans[key] = plan
        if len(self._plans) > self._plans_max:
            self._plans.popitem(last=False)
        return plan

    async def _matches(self, key: tuple[int, str, int], blob: bytes) -> bool:
        """Whether a plan read from Redis is the one PostgreSQL recorded; if not, the copy
        is deleted and an alert recorded."""
        expected = await self._source.plan_sha256(*key)
        if expected is not None and hashlib.sha256(blob).digest() == expected:
            return True
        platform_id, name, version = key
        await self._redis_call(lambda r: r.delete(self._plan_key(*key)))
        if expected is None:  # no such version: nothing to compare with
            return False
        MISMATCHES.inc()
        message = (f"rule set {name!r} version {version}: the plan cached in Redis does not"
                   " match the plan hash recorded in PostgreSQL; it was dropped and"
                   " PostgreSQL's plan used")
        log.error(message, extra={"platform_id": platform_id, "rule_set_name": name,
                                  "rule_set_version": version})
        await self._source.alert(platform_id, MISMATCH_REASON, message)
        return False

    async def _active_version(self, platform_id: int, name: str) -> int | None:
        key = (platform_id, name)
        hit = self._pointers.get(key)
        now = self._clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        version = await self._source.active_version(platform_id, name)
        self._pointers[key] = (now + self._pointer_ttl_s, version)
        return version

    # ---- activation --------------------------------------------------------------------

    async def activated(self, platform_id: int, name: str, version: int) -> None:
        """Call after an activation is committed in PostgreSQL: tell every process to drop
        its pointer (best effort: without Redis, the pointer TTL still bounds the delay)."""
        self._pointers.pop((platform_id, name), None)
        await self._redis_call(lambda r: r.publish(self.channel, f"{platform_id}:{name}"))

    def drop(self, platform_id: int, name: str) -> None:
        self._pointers.pop((platform_id, name), None)

    # ---- the invalidation listener ---------------------------------------------------------

    def start(self) -> None:
        if self._redis is not None and self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="plan-cache-listener")

    async def stop(self) -> None:
        if self._listener is not None:
            await cancel_and_wait(self._listener)
            self._listener = None

    async def _listen(self) -> None:
        attempt = 0
        while True:
            try:
                # a cluster client must know the slots before its pub/sub picks a node (it
                # learns them on its first command, which may not have run yet)
                await self._redis.initialize()
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._pointers.clear()  # activations may have been missed meanwhile
                    self.subscribed.set()
                    attempt = 0
                    async for message in pubsub.listen():
                        self._on_message(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis gone: retry, never fail callers
                self.subscribed.clear()
                REDIS_ERRORS.inc()
                delay = LISTEN_BACKOFF_S[min(attempt, len(LISTEN_BACKOFF_S) - 1)]
                attempt += 1
                log.warning("plan invalidation listener lost Redis (%s); retry in %.1f s",
                            exc, delay)
                await asyncio.sleep(delay)

    def _on_message(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        if isinstance(data, bytes):
            data = data.decode()
        platform, _, name = str(data).partition(":")
        if platform.isdigit():
            self.drop(int(platform), name)

    # ---- Redis, best effort ----------------------------------------------------------------

    async def _redis_call(self, op: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
        if self._redis is None:
            return None
        try:
            return await asyncio.wait_for(op(self._redis), REDIS_OP_TIMEOUT_S)
        except (aioredis.RedisError, OSError, asyncio.TimeoutError) as exc:
            REDIS_ERRORS.inc()
            log.debug("plan cache: redis unavailable (%r); using PostgreSQL", exc)
            return None
