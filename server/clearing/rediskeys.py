"""Every Redis key the server writes, in one place, and how keys of an older layout are
folded into it.

Each key carries its platform's hash tag `{p<platform_id>}` right after the configured
prefix: `clearing:{p42}:ctr:...`. Redis Cluster places a key by the text between the first
`{` and the next `}`, so every key of one platform lives in one slot, and a platform's
multi-key operations (the risk counters' Lua scripts, the tier counters' pipelines) never
cross slots. Different platforms spread over the cluster's nodes. On a single Redis the tag
is just part of the name. The prefix must therefore hold no `{` or `}` (config.py checks).

Nothing the server keeps in Redis is per-process or global but the plan invalidation
channel, which is a pub/sub channel, not a key: a classic PUBLISH reaches the subscribers of
every node of a cluster.

Keys of the layout before the tags (`clearing:ctr:42:...`, `clearing:rules:plan:42:...`,
`clearing:risk:{42:7}:...`), found on a single Redis by a server starting, are dealt with
by `fold_legacy` (see there): tier counters are added into their new key, plans and risk
keys (caches, rebuilt from PostgreSQL) are deleted.
"""

from __future__ import annotations

import asyncio
import logging
import re

import redis.asyncio as aioredis

log = logging.getLogger("clearing.rediskeys")

SCAN_COUNT = 1000


def tag(platform_id: int) -> str:
    """The hash tag of a platform's keys."""
    return f"{{p{platform_id}}}"


def platform_base(prefix: str, platform_id: int) -> str:
    """The start of every key of one platform."""
    return f"{prefix}{tag(platform_id)}:"


def plan(prefix: str, platform_id: int, name: str, version: int) -> str:
    """A published rule set version's compiled plan (rules/cache.py)."""
    return f"{platform_base(prefix, platform_id)}rules:plan:{name}:{version}"


def counter(prefix: str, platform_id: int, name: str, subject: str, bucket: str) -> str:
    """A tier counter's value in one period (rules/counters.py)."""
    return f"{platform_base(prefix, platform_id)}ctr:{name}:{subject}:{bucket}"


def risk(prefix: str, platform_id: int, account_id: int) -> str:
    """The start of a receiver's risk counter keys (risk/counting.py)."""
    return f"{platform_base(prefix, platform_id)}risk:{account_id}"


# ---- the layout before the tags ----------------------------------------------------------

# Adds an old counter into its new key and deletes it, in one step (two processes folding
# at once add it once); the new key keeps the later of the two expiries (a key new here
# gets the old one's).
_FOLD = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('INCRBY', KEYS[2], v)
local new_ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 and (new_ttl == -1 or new_ttl < ttl) then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('DEL', KEYS[1])
return 1
"""

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _glob(prefix: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", prefix)


def legacy_counter_target(prefix: str, key: str) -> str | None:
    """The new key of an old tier counter key `<prefix>ctr:<platform>:<rest>`."""
    rest = key[len(prefix) + len("ctr:"):]
    platform, sep, tail = rest.partition(":")
    if not sep or not platform.isdigit():
        return None
    return f"{platform_base(prefix, int(platform))}ctr:{tail}"


async def fold_legacy(redis: aioredis.Redis, prefix: str) -> dict[str, int]:
    """Move the keys an older version wrote (single Redis only) into today's layout.

    - tier counters `<prefix>ctr:<p>:...`: each is added to its new key and deleted, so
      the counts of the current period are kept (a counter both layouts wrote to, during a
      rolling upgrade, ends as their sum);
    - plans `<prefix>rules:plan:<p>:...` (no expiry) are deleted: the new keys are filled
      from PostgreSQL on first use;
    - risk keys `<prefix>risk:{<p>:<a>}:...` are deleted: the new keys are rebuilt from
      PostgreSQL (they would expire within three days anyway).
    Returns the number of keys of each kind handled. Safe to run by several processes
    at once and again later."""
    done = {"counters": 0, "plans": 0, "risk": 0}
    fold = redis.register_script(_FOLD)
    base = _glob(prefix)
    async for raw in redis.scan_iter(match=base + "ctr:*", count=SCAN_COUNT):
        key = raw.decode()
        target = legacy_counter_target(prefix, key)
        if target is not None:
            done["counters"] += int(await fold(keys=[key, target]))
    for kind, pattern in (("plans", "rules:plan:*"), ("risk", "risk:{*")):
        async for raw in redis.scan_iter(match=base + pattern, count=SCAN_COUNT):
            done[kind] += int(await redis.delete(raw))
    return done


async def fold_legacy_quietly(redis: aioredis.Redis, prefix: str) -> None:
    """`fold_legacy` as a start-up job: logged, and never failing the server."""
    try:
        done = await fold_legacy(redis, prefix)
    except asyncio.CancelledError:
        raise
    except (aioredis.RedisError, OSError) as exc:
        log.warning("redis: keys of the older layout not folded (%r); next start retries",
                    exc)
        return
    if any(done.values()):
        log.info("redis: keys of the older layout folded into the per-platform layout",
                 extra=done)
