"""Keys of the layout before the per-platform hash tags, on a single Redis: a server starting
folds them in. A tier counter of the current period keeps its count (added to the new key,
which another process may already have counted into), plans and risk keys (caches) are
deleted, keys of the new layout and of other prefixes are left alone, and a second fold finds
nothing."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from clearing import rediskeys, redisconn


@pytest.fixture
async def client(redis_url):
    c = redisconn.connect(redis_url)
    yield c
    await c.aclose()


async def test_fold_keeps_counts_and_drops_caches(client, redis_prefix):
    prefix = f"{redis_prefix}fold{secrets.token_hex(3)}:"
    old_month = f"{prefix}ctr:42:orders:SUP_2025001:2026-11-01"
    old_life = f"{prefix}ctr:42:gmv:HOST:lifetime"
    new_month = rediskeys.counter(prefix, 42, "orders", "SUP_2025001", "2026-11-01")
    new_life = rediskeys.counter(prefix, 42, "gmv", "HOST", "lifetime")
    await client.set(old_month, 998, ex=3_000)
    await client.set(new_month, 3, ex=1_000)  # a new process counted 3 orders meanwhile
    await client.set(old_life, 123_456_00)
    await client.set(f"{prefix}rules:plan:42:b2b:1", b"plan")
    await client.zadd(f"{prefix}risk:{{42:7}}:f:50000", {"o1": 1.0})
    kept = {rediskeys.plan(prefix, 42, "b2b", 1): b"new plan",
            f"{redis_prefix}other:ctr:42:orders:S:2026-11-01": b"5"}  # another prefix
    for key, value in kept.items():
        await client.set(key, value)

    done = await rediskeys.fold_legacy(client, prefix)

    assert done == {"counters": 2, "plans": 1, "risk": 1}
    assert await client.get(new_month) == b"1001"  # 998 + 3
    assert 2_990 <= await client.ttl(new_month) <= 3_000  # the later expiry is kept
    assert await client.get(new_life) == b"12345600"
    assert await client.ttl(new_life) == -1  # a lifetime counter never expires
    assert await client.exists(old_month, old_life, f"{prefix}rules:plan:42:b2b:1",
                               f"{prefix}risk:{{42:7}}:f:50000") == 0
    for key, value in kept.items():
        assert await client.get(key) == value
    assert await rediskeys.fold_legacy(client, prefix) == {"counters": 0, "plans": 0,
                                                           "risk": 0}
    await client.delete(*kept)


async def test_two_processes_folding_at_once_add_each_count_once(client, redis_prefix,
                                                                 redis_url):
    prefix = f"{redis_prefix}fold{secrets.token_hex(3)}:"
    for i in range(200):
        await client.set(f"{prefix}ctr:{i}:orders:S:2026-11-01", i + 1, ex=600)
    other = redisconn.connect(redis_url)
    try:
        a, b = await asyncio.gather(rediskeys.fold_legacy(client, prefix),
                                    rediskeys.fold_legacy(other, prefix))
    finally:
        await other.aclose()
    assert a["counters"] + b["counters"] == 200
    values = [await client.get(rediskeys.counter(prefix, i, "orders", "S", "2026-11-01"))
              for i in range(200)]
    assert values == [str(i + 1).encode() for i in range(200)]
