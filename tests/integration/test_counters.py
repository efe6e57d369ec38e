"""Tier counters in Redis: exact ranks under concurrency, periods, undo, Redis down."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets

import pytest

from clearing import redisconn
from clearing.dev.embedded_redis import start_redis
from clearing.rules.counters import (CounterSpec, Counters, Period, Source, period_start)

UTC = dt.timezone.utc
AT = dt.datetime(2026, 11, 11, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai


def _spec(name: str, delta: int = 1, at: dt.datetime = AT, period: Period = Period.MONTH,
          subject: str = "SUP_2025001") -> CounterSpec:
    return CounterSpec(1, name, subject, period, "Asia/Shanghai", delta, at)


def test_period_boundaries_in_the_counters_time_zone():
    tz = "Asia/Shanghai"
    late = dt.datetime(2026, 11, 30, 16, 30, tzinfo=UTC)  # Dec 1, 00:30 in Shanghai
    assert period_start(Period.MONTH, late, tz).date() == dt.date(2026, 12, 1)
    assert period_start(Period.DAY, AT, tz).date() == dt.date(2026, 11, 11)
    assert period_start(Period.WEEK, AT, tz).date() == dt.date(2026, 11, 9)  # a Monday
    assert period_start(Period.YEAR, AT, tz).date() == dt.date(2026, 1, 1)
    assert period_start(Period.LIFETIME, AT, tz) is None


@pytest.fixture
async def counters(redis_url, redis_prefix):
    client = redisconn.connect(redis_url)
    # a generous timeout: these tests are about LIVE values, not about a slow Redis
    yield Counters(client, f"{redis_prefix}{secrets.token_hex(3)}:", op_timeout_s=5.0)
    await client.aclose()


@pytest.mark.parametrize("at", [
    AT,  # a period long closed (past its grace): the key kept a grace from now
    dt.datetime.now(UTC),  # the current one
], ids=["closed-period", "current-period"])
async def test_concurrent_orders_get_distinct_ranks(counters: Counters, at: dt.datetime):
    name = "supplier_orders_month"
    readings = await asyncio.gather(*[counters.reserve([_spec(name, at=at)])
                                      for _ in range(200)])
    values = sorted(r[0].value for r in readings)
    assert values == list(range(1, 201))
    assert all(r[0].source is Source.LIVE for r in readings)
    peek = await counters.peek([_spec(name, at=at)])
    assert peek[0].value == 201 and peek[0].source is Source.LIVE
    assert (await counters.peek([_spec(name, at=at)]))[0].value == 201  # peek adds nothing


async def test_amounts_periods_and_undo(counters: Counters):
    gmv = "host_gmv_lifetime"
    first = await counters.reserve([_spec(gmv, 300_000_00, period=Period.LIFETIME)])
    second = await counters.reserve([_spec(gmv, 200_000_01, period=Period.LIFETIME)])
    assert (first[0].value, second[0].value) == (300_000_00, 500_000_01)
    await counters.undo(second)
    assert (await counters.peek([_spec(gmv, 0, period=Period.LIFETIME)]))[0].value == 300_000_00
    next_month = AT + dt.timedelta(days=30)
    a = await counters.reserve([_spec("orders", at=AT)])
    b = await counters.reserve([_spec("orders", at=next_month)])
    assert (a[0].value, b[0].value) == (1, 1)
    assert a[0].key != b[0].key


@pytest.mark.slow
async def test_redis_down_falls_back_to_last_known_values(tmp_path):
    server = start_redis(tmp_path / "redis")
    client = redisconn.connect(server.url, socket_timeout_s=0.2)
    counters = Counters(client, "t:")
    try:
        for _ in range(3):
            live = await counters.reserve([_spec("orders")])
        assert (live[0].value, live[0].source) == (3, Source.LIVE)
        server.stop()
        down = await counters.reserve([_spec("orders"), _spec("other")])
        assert [(r.value, r.source) for r in down] == [(4, Source.FALLBACK), (1, Source.FALLBACK)]
        await counters.undo(down)  # nothing to take back from Redis: no error
    finally:
        await client.aclose()
        server.stop()
