"""Redis cannot change where money goes: a plan written into Redis behind the server's back
is refused (it does not match the plan hash PostgreSQL recorded at publish), the split is
booked by the filed plan and an alert is recorded; a forged active-version pointer or
invalidation message in Redis reroutes nothing (PostgreSQL is the pointer's authority)."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis

from clearing import rediskeys
from clearing.v1 import ledger_pb2 as lpb
from tests.split_support import Splits, by_ref, new_key, open_accounts, order
from tests.support import Client

RULES = """
name: tamper
currency_code: CNY
rules:
  - rule_name: cut
    priority: 1
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: @RATIO@,
         receiver: {account_ref: PLAT_001}}
      - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: M_10086}}
"""
# version 1 (filed and active): 10% to the platform; version 2 (published, never
# activated): 90% to it
FILED = {"PLAT_001": 1_000, "M_10086": 9_000}


@pytest.fixture
async def filed(channel, client: Client, database_url, platform, redis_url, redis_prefix):
    """Rule set 'tamper' v1 active, v2 published only; nothing looked up yet."""
    await client.open("custodial", kind=lpb.ACCOUNT_KIND_CUSTODIAL)
    await open_accounts(client, refs=["PLAT_001", "M_10086"])
    maker = Splits(channel, platform.key)
    checker = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    v1 = await maker.publish(RULES.replace("@RATIO@", "1000"))
    v2 = await maker.publish(RULES.replace("@RATIO@", "9000"))
    await checker.activate("tamper", v1.version)
    redis = aioredis.from_url(redis_url)
    conn = await asyncpg.connect(database_url)
    try:
        yield maker, redis, conn, (v1.version, v2.version)
    finally:
        await redis.aclose()
        await conn.close()


def _plan_key(prefix: str, pid: int, version: int) -> str:
    return rediskeys.plan(prefix, pid, "tamper", version)


async def _plan(conn, pid: int, version: int) -> bytes:
    return await conn.fetchval("SELECT plan FROM rule_sets WHERE platform_id = $1"
                               " AND name = 'tamper' AND version = $2", pid, version)


async def _alerts(conn, pid: int) -> list[tuple[str, int]]:
    return [(r[0], r[1]) for r in await conn.fetch(
        "SELECT reason, split_id FROM split_alerts WHERE platform_id = $1 ORDER BY alert_id",
        pid)]


async def test_a_tampered_plan_in_redis_is_refused_and_alerted(filed, platform, redis_prefix):
    maker, redis, conn, (v1, v2) = filed
    pid = platform.platform_id
    key = _plan_key(redis_prefix, pid, v1)
    # a valid plan, but not version 1's: it would send 90% to the platform
    await redis.set(key, await _plan(conn, pid, v2))
    booked = await maker.split(order(10_000, rule_set_name="tamper"))
    assert booked.rule_set_version == v1
    assert by_ref(booked) == FILED
    assert await _alerts(conn, pid) == [("PLAN_CACHE_MISMATCH", 0)]
    assert await redis.get(key) == await _plan(conn, pid, v1)  # the copy was replaced
    again = await maker.split(order(10_000, rule_set_name="tamper"))
    assert by_ref(again) == FILED and len(await _alerts(conn, pid)) == 1


async def test_garbage_in_redis_is_refused_and_alerted(filed, platform, redis_prefix):
    maker, redis, conn, (v1, _) = filed
    pid = platform.platform_id
    await redis.set(_plan_key(redis_prefix, pid, v1), b'{"format": 1, "rules": []}')
    preview = await maker.preview(order(10_000, rule_set_name="tamper"))
    assert by_ref(preview) == FILED
    assert await _alerts(conn, pid) == [("PLAN_CACHE_MISMATCH", 0)]


async def test_a_forged_pointer_and_invalidation_reroute_nothing(filed, platform,
                                                                 redis_prefix):
    maker, redis, conn, (v1, v2) = filed
    pid = platform.platform_id
    assert by_ref(await maker.split(order(10_000, rule_set_name="tamper"))) == FILED
    # point 'tamper' at the version no approver activated, and make every process drop
    # what it remembers of the pointer
    await redis.set(f"{redis_prefix}rules:active:{pid}:tamper", str(v2))
    await redis.publish(f"{redis_prefix}rules:invalidate", f"{pid}:tamper")
    for _ in range(3):
        booked = await maker.split(order(10_000, rule_set_name="tamper"))
        assert booked.rule_set_version == v1 and by_ref(booked) == FILED
    assert await _alerts(conn, pid) == []
