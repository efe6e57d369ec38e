"""The plan cache: memory -> Redis -> PostgreSQL, invalidation by pub/sub, and Redis down."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import pytest
import redis.asyncio as aioredis

from clearing import db, rediskeys
from clearing.dev.embedded_redis import start_redis
from clearing.rules import store
from clearing.rules.cache import LOOKUPS, MISMATCHES, PlanCache
from clearing.rules.store import PgSource

CONTENT = b"rule set"


def _plan(version: int) -> bytes:
    return json.dumps({"format": 1, "version": version}).encode()


def _layer_count(layer: str) -> float:
    return LOOKUPS.labels(layer)._value.get()


@pytest.fixture
async def pool(database_url):
    p = await db.create_pool(database_url, min_size=1, max_size=4, command_timeout_s=30)
    yield p
    await p.close()


@pytest.fixture
async def rule_set(pool):
    """A platform with rule set 'b2b' versions 1 and 2, version 1 active."""
    async with pool.acquire() as conn:
        pid = await conn.fetchval("INSERT INTO platforms (name) VALUES ($1) RETURNING platform_id",
                                  f"r_{secrets.token_hex(5)}")
        for v in (1, 2):
            assert await store.insert_version(conn, pid, "b2b", CONTENT, b"h", _plan(v), 1) == v
        await store.activate(conn, pid, "b2b", 1, 2)
    return pid


async def _activate(pool, cache: PlanCache, pid: int, version: int) -> None:
    async with pool.acquire() as conn:
        await store.activate(conn, pid, "b2b", version, 2)
    await cache.activated(pid, "b2b", version)


async def test_layers_memory_redis_postgres(pool, rule_set, redis_url, redis_prefix):
    redis = aioredis.from_url(redis_url)
    try:
        first = PlanCache(PgSource(pool), json.loads, redis, redis_prefix)
        pg_before = _layer_count("postgres")
        got = await first.active(rule_set, "b2b")
        assert (got.version, got.plan) == (1, {"format": 1, "version": 1})
        assert _layer_count("postgres") == pg_before + 1
        mem_before = _layer_count("memory")
        await first.active(rule_set, "b2b")
        assert _layer_count("memory") == mem_before + 1
        second = PlanCache(PgSource(pool), json.loads, redis, redis_prefix)  # another process
        redis_before = _layer_count("redis")
        assert (await second.active(rule_set, "b2b")).version == 1
        assert _layer_count("redis") == redis_before + 1
        assert await first.active(rule_set, "none") is None
    finally:
        await redis.aclose()


async def test_activation_reaches_another_process_within_a_second(pool, rule_set, redis_url,
                                                                  redis_prefix):
    clients = [aioredis.from_url(redis_url) for _ in range(2)]
    # a long pointer TTL: only the invalidation message can make B see the change quickly
    a, b = (PlanCache(PgSource(pool), json.loads, c, redis_prefix, pointer_ttl_s=3600)
            for c in clients)
    b.start()
    try:
        await asyncio.wait_for(b.subscribed.wait(), 5)
        assert (await b.active(rule_set, "b2b")).version == 1
        await _activate(pool, a, rule_set, 2)
        started = time.monotonic()
        while (await b.active(rule_set, "b2b")).version != 2:
            assert time.monotonic() - started < 1.0, "activation not seen within a second"
            await asyncio.sleep(0.01)
    finally:
        await b.stop()
        for c in clients:
            await c.aclose()


@pytest.mark.slow
async def test_redis_down_lookups_go_on(pool, rule_set, tmp_path):
    server = start_redis(tmp_path / "redis")
    port = server.port
    redis = aioredis.from_url(server.url, socket_connect_timeout=0.2, socket_timeout=0.2)
    cache = PlanCache(PgSource(pool), json.loads, redis, "t:", pointer_ttl_s=0.2)
    cache.start()
    try:
        await asyncio.wait_for(cache.subscribed.wait(), 5)
        assert (await cache.active(rule_set, "b2b")).version == 1
        server.stop()
        # Redis is gone: a new version activated in PostgreSQL is still found (pointer TTL)
        async with pool.acquire() as conn:
            await store.activate(conn, rule_set, "b2b", 2, 2)
        await asyncio.sleep(0.25)
        got = await cache.active(rule_set, "b2b")
        assert (got.version, got.plan["version"]) == (2, 2)
        # Redis back on the same port: the listener subscribes again. Redis never held
        # the pointer (PostgreSQL is its authority), so nothing stale survives the outage.
        server = start_redis(tmp_path / "redis", port=port)
        probe = aioredis.from_url(server.url)
        await asyncio.wait_for(cache.subscribed.wait(), 10)
        assert await probe.keys("t:rules:active:*") == []
        await probe.aclose()
        assert (await cache.active(rule_set, "b2b")).version == 2
    finally:
        await cache.stop()
        await redis.aclose()
        server.stop()


async def test_a_plan_not_matching_postgres_hash_is_dropped(pool, rule_set, redis_url,
                                                            redis_prefix):
    redis = aioredis.from_url(redis_url)
    try:
        key = rediskeys.plan(redis_prefix, rule_set, "b2b", 1)
        await redis.set(key, _plan(2))  # version 2's plan under version 1's key
        cache = PlanCache(PgSource(pool), json.loads, redis, redis_prefix)
        before = MISMATCHES._value.get()
        got = await cache.active(rule_set, "b2b")
        assert (got.version, got.plan) == (1, {"format": 1, "version": 1})
        assert MISMATCHES._value.get() == before + 1
        assert await redis.get(key) == _plan(1)
        reasons = await pool.fetch("SELECT reason, message FROM split_alerts"
                                   " WHERE platform_id = $1", rule_set)
        assert [r["reason"] for r in reasons] == ["PLAN_CACHE_MISMATCH"]
        assert "'b2b' version 1" in reasons[0]["message"]
        # the genuine copy is used as it is, by another process: no second alert
        other = PlanCache(PgSource(pool), json.loads, redis, redis_prefix)
        redis_before = _layer_count("redis")
        assert (await other.plan(rule_set, "b2b", 1)) == {"format": 1, "version": 1}
        assert _layer_count("redis") == redis_before + 1
        assert MISMATCHES._value.get() == before + 1
    finally:
        await redis.aclose()
