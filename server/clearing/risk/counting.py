"""The risk counters: per receiver, its shares above the frequency amount in a sliding
window and its inflow of the day, across every server process.

Source of truth: PostgreSQL. The splits sink writes one `risk_inflows` row per receiver of
every committed split of a platform with an active policy, in the split's own transaction
(migration 0018). Redis holds a cache of the recent rows, per receiver:
- `{pP}:risk:A:f:X`: a sorted set of the order ids of its shares above X (score: paid time
  in seconds); trimmed to two days;
- `{pP}:risk:A:d:DAY`: a hash order id -> share of that UTC day, and `_sum`
(after the prefix; `{pP}` is the platform's hash tag, so one split's keys, of all its
receivers, are in one Redis Cluster slot and one script call: clearing/rediskeys.py).
Each holds a `_loaded` marker. A key without it (a Redis restart, eviction, a new day, a new
X) is rebuilt from PostgreSQL before it is counted: the rows of the window and of the day,
added by order id, so two processes rebuilding at once build the same set.

A split adds its order id before the decision (the count includes it) and removes it again
unless its posting committed (`undo`). Members are order ids, so a replay of an order counts
it once; the replay's own addition is a no-op and its undo removes nothing.

What a restart can lose: an order reserved before the restart whose posting commits after a
rebuild that ran meanwhile is not in the rebuilt key until the key is rebuilt again (at most
the orders in flight at the restart; the rows in PostgreSQL are complete). Redis down or
slow: the counts are read from PostgreSQL directly (one query per receiver; `source`
"postgres"); they see committed splits only, so splits in flight at the same moment may not
count each other (a degradation like the tier counters', logged). A connection error is
retried on another connection first (a pool's connections from before a Redis restart each
fail once).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from clearing import rediskeys
from clearing.risk.check import Counts
from clearing.risk.model import FREQUENCY_WINDOW_S_MAX, Policy

log = logging.getLogger("clearing.risk.counting")

REDIS_OP_TIMEOUT_S = 0.2
CONNECT_ATTEMPTS = 4  # connection errors (stale pooled connections after a restart)
EVIDENCE_ORDERS_MAX = 20
KEEP_S = 2 * FREQUENCY_WINDOW_S_MAX  # what the sorted sets keep
DAY_KEY_TTL_S = 3 * 86_400

_RESERVE = """
local order, score, wstart, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local keep_from, ttl_f, ttl_d, evidence = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local out = {}
for i = 1, n do
  local fk, dk = KEYS[2 * i - 1], KEYS[2 * i]
  local amount, large = tonumber(ARGV[7 + 2 * i]), ARGV[8 + 2 * i] == '1'
  if not redis.call('ZSCORE', fk, '_loaded') or redis.call('HEXISTS', dk, '_loaded') == 0 then
    out[i] = {-1, 0, 0, 0, 0, {}}
  else
    local addf, addd = 0, 0
    if large then addf = redis.call('ZADD', fk, 'NX', score, order) end
    redis.call('ZREMRANGEBYSCORE', fk, '-inf', '(' .. keep_from)
    local cnt = redis.call('ZCOUNT', fk, '(' .. wstart, '(+inf')
    local orders = redis.call('ZRANGEBYSCORE', fk, '(' .. wstart, '(+inf', 'LIMIT', 0, evidence)
    if redis.call('HSETNX', dk, order, amount) == 1 then
      addd = 1
      redis.call('HINCRBY', dk, '_sum', amount)
    end
    redis.call('EXPIRE', fk, ttl_f)
    redis.call('EXPIRE', dk, ttl_d)
    out[i] = {1, cnt, tonumber(redis.call('HGET', dk, '_sum')), addf, addd, orders}
  end
end
return out
"""

_UNDO = """
local order = ARGV[1]
for i = 1, #KEYS / 2 do
  local amount, addf, addd = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  if addf == '1' then redis.call('ZREM', KEYS[2 * i - 1], order) end
  if addd == '1' and redis.call('HDEL', KEYS[2 * i], order) == 1 then
    redis.call('HINCRBY', KEYS[2 * i], '_sum', -tonumber(amount))
  end
end
return 1
"""

_REBUILD = """
local fk, dk, ttl_f, ttl_d = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
for i = 3, #ARGV, 4 do
  local order, score, amount, flags = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if string.sub(flags, 1, 1) == '1' then redis.call('ZADD', fk, 'NX', score, order) end
  if string.sub(flags, 2, 2) == '1' and redis.call('HSETNX', dk, order, amount) == 1 then
    redis.call('HINCRBY', dk, '_sum', amount)
  end
end
redis.call('HINCRBY', dk, '_sum', 0)
redis.call('ZADD', fk, '+inf', '_loaded')
redis.call('HSET', dk, '_loaded', '1')
redis.call('EXPIRE', fk, ttl_f)
redis.call('EXPIRE', dk, ttl_d)
return 1
"""

_SQL_ROWS = """
SELECT order_id, amount_minor, paid_at FROM risk_inflows
WHERE platform_id = $1 AND account_id = $2 AND currency_code = $3 AND paid_at >= $4
"""


@dataclass(frozen=True, slots=True)
class Taken:
    """What a split added to Redis (undone unless its posting commits)."""

    keys: tuple[str, ...]
    args: tuple[str, ...]


def day_start(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


class RiskCounters:
    """See the module docstring."""

    def __init__(self, pool: asyncpg.Pool, redis: aioredis.Redis | None, prefix: str, *,
                 op_timeout_s: float = REDIS_OP_TIMEOUT_S) -> None:
        self._pool = pool
        self._redis = redis
        self._prefix = prefix
        self._op_timeout_s = op_timeout_s
        if redis is not None:
            self._reserve = redis.register_script(_RESERVE)
            self._undo = redis.register_script(_UNDO)
            self._rebuild = redis.register_script(_REBUILD)

    def _keys(self, platform_id: int, account_id: int, x_minor: int, at: dt.datetime
              ) -> tuple[str, str]:
        base = rediskeys.risk(self._prefix, platform_id, account_id)
        return f"{base}:f:{x_minor}", f"{base}:d:{day_start(at).date().isoformat()}"

    async def reserve(self, platform_id: int, policy: Policy, order_id: str,
                      currency_code: str, at: dt.datetime,
                      shares: Mapping[int, int]) -> tuple[dict[int, Counts], Taken | None]:
        """Each receiver's counts with this split added, and what to undo."""
        limits = policy.of(currency_code)
        if limits is None or not policy.counts or not shares:
            return {}, None
        for attempt in range(CONNECT_ATTEMPTS if self._redis is not None else 0):
            try:
                return await asyncio.wait_for(self._reserve_redis(
                    platform_id, policy, order_id, currency_code, at, shares),
                    self._op_timeout_s * 4)
            except aioredis.ConnectionError as exc:
                # a pooled connection from before a Redis restart fails once: try another
                if attempt + 1 < CONNECT_ATTEMPTS:
                    continue
                log.warning("risk counters: Redis unreachable (%r): counting in PostgreSQL", exc)
            except (aioredis.RedisError, OSError, asyncio.TimeoutError) as exc:
                log.warning("risk counters: Redis unreachable (%r): counting in PostgreSQL", exc)
                break
        return await self._from_postgres(platform_id, policy, order_id, currency_code, at,
                                         shares), None

    async def undo(self, taken: Taken | None) -> None:
        """Take back what a split added that did not commit."""
        if taken is None or self._redis is None:
            return
        try:
            await asyncio.wait_for(self._undo(keys=list(taken.keys), args=list(taken.args)),
                                   self._op_timeout_s)
        except (aioredis.RedisError, OSError, asyncio.TimeoutError) as exc:
            log.warning("risk counters: undo failed (%r); a rebuild corrects the key", exc)

    async def _reserve_redis(self, platform_id: int, policy: Policy, order_id: str,
                             currency_code: str, at: dt.datetime,
                             shares: Mapping[int, int]) -> tuple[dict[int, Counts], Taken]:
        x = policy.of(currency_code).frequency_amount_minor  # type: ignore[union-attr]
        score = at.timestamp()
        accounts = list(shares)
        out: dict[int, Counts] = {}
        taken_keys: list[str] = []
        taken_args: list[str] = [order_id]
        for _ in range(2):  # the second round after rebuilding the keys that had no marker
            keys: list[str] = []
            args = [order_id, repr(score), repr(score - policy.frequency_window_s),
                    str(len(accounts)), repr(score - KEEP_S), str(KEEP_S), str(DAY_KEY_TTL_S),
                    str(EVIDENCE_ORDERS_MAX)]
            for account_id in accounts:
                keys += self._keys(platform_id, account_id, x, at)
                args += [str(shares[account_id]),
                         "1" if x and shares[account_id] > x else "0"]
            replies = await self._reserve(keys=keys, args=args)
            missing = []
            for account_id, reply, i in zip(accounts, replies, range(len(accounts))):
                status, count, inflow, addf, addd, orders = reply
                if status < 0:
                    missing.append(account_id)
                    continue
                out[account_id] = Counts(int(count), int(inflow),
                                         tuple(o.decode() for o in orders))
                taken_keys += keys[2 * i:2 * i + 2]
                taken_args += [str(shares[account_id]), str(addf), str(addd)]
            if not missing:
                break
            for account_id in missing:
                await self._rebuild_one(platform_id, account_id, x, currency_code, at)
            accounts = missing
        return out, Taken(tuple(taken_keys), tuple(taken_args))

    async def _rebuild_one(self, platform_id: int, account_id: int, x_minor: int,
                           currency_code: str, at: dt.datetime) -> None:
        start = day_start(at)
        since = min(start, at - dt.timedelta(seconds=KEEP_S))
        rows = await self._pool.fetch(_SQL_ROWS, platform_id, account_id, currency_code, since)
        args = [str(KEEP_S), str(DAY_KEY_TTL_S)]
        end = start + dt.timedelta(days=1)
        for r in rows:
            large = "1" if x_minor and r["amount_minor"] > x_minor else "0"
            in_day = "1" if start <= r["paid_at"] < end else "0"
            args += [r["order_id"], repr(r["paid_at"].timestamp()), str(r["amount_minor"]),
                     large + in_day]
        await self._rebuild(keys=list(self._keys(platform_id, account_id, x_minor, at)),
                            args=args)
        log.info("risk counters rebuilt from PostgreSQL",
                 extra={"platform_id": platform_id, "account_id": account_id,
                        "rows": len(rows)})

    async def _from_postgres(self, platform_id: int, policy: Policy, order_id: str,
                             currency_code: str, at: dt.datetime,
                             shares: Mapping[int, int]) -> dict[int, Counts]:
        x = policy.of(currency_code).frequency_amount_minor  # type: ignore[union-attr]
        start = day_start(at)
        window_from = at - dt.timedelta(seconds=policy.frequency_window_s)
        end = start + dt.timedelta(days=1)
        out: dict[int, Counts] = {}
        async with self._pool.acquire() as conn:
            for account_id, amount in shares.items():
                rows = await conn.fetch(_SQL_ROWS, platform_id, account_id, currency_code,
                                        min(start, window_from))
                others = [r for r in rows if r["order_id"] != order_id]
                freq = sorted(r["order_id"] for r in others
                              if x and r["amount_minor"] > x and r["paid_at"] > window_from)
                if x and amount > x:
                    freq.append(order_id)
                inflow = amount + sum(r["amount_minor"] for r in others
                                      if start <= r["paid_at"] < end)
                out[account_id] = Counts(len(freq), inflow,
                                         tuple(freq[:EVIDENCE_ORDERS_MAX]), "postgres")
        return out
