"""The daily dynamic ratio swing: each receiver's share of the platform's split volume on a
day against the day before, through splits made with the generated stubs and the job's
one-day step run directly (as the job does once the day is over). Worked by hand:

Day D-1: to-m 11,000 (M_10086 10,000, PLAT_001 1,000) and to-a 11,000 (ACC_1 10,000,
PLAT_001 1,000): total 22,000; M's share 10/22.
Day D:   to-m X and to-a 44,000 - X: total 44,000, PLAT_001 2,000 (1/22: a swing of 50%,
flagged), ACC_1 43,000 - X.
- X = 27,000: M 26,000 = 13/22, a swing of exactly 30%: not flagged; ACC_1 16,000 = 8/22: 20%.
- X = 27,001: M 26,001: |26,001 x 22,000 - 10,000 x 44,000| = 132,022,000 >
  0.3 x 10,000 x 44,000 = 132,000,000: flagged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import asyncpg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from clearing import db, metrics
from clearing.risk import daily_swing, policy_store
from clearing.v1 import risk_pb2 as rpb
from tests.risk_support import World, limits, make_world
from tests.split_support import order

DAY = dt.date(2026, 3, 10)


@pytest.fixture
async def world(channel, client, database_url, platform) -> World:
    return await make_world(channel, client, database_url, platform.platform_id)


@pytest.fixture
async def pool(database_url):
    p = await db.create_pool(database_url, min_size=1, max_size=4, command_timeout_s=30)
    yield p
    await p.close()


def _paid(day: dt.date, hour: int) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt.datetime.combine(day, dt.time(hour), dt.timezone.utc))
    return ts


async def _days(w: World, merchant_today_order: int) -> None:
    before = DAY - dt.timedelta(days=1)
    await w.splits.split(order(11_000, rule_set_name="to-m", paid_time=_paid(before, 1)))
    await w.splits.split(order(11_000, rule_set_name="to-a", paid_time=_paid(before, 23)))
    await w.splits.split(order(merchant_today_order, rule_set_name="to-m",
                               paid_time=_paid(DAY, 0)))
    await w.splits.split(order(44_000 - merchant_today_order, rule_set_name="to-a",
                               paid_time=_paid(DAY, 12)))
    # the day after does not count for DAY
    await w.splits.split(order(90_000, rule_set_name="to-m",
                               paid_time=_paid(DAY + dt.timedelta(days=1), 0)))


async def _policy(pool, platform_id: int):
    async with pool.acquire() as conn:
        return (await policy_store.get(conn, platform_id, 0)).policy


async def test_a_swing_of_exactly_30_percent_is_not_flagged(world: World, pool, platform):
    await world.file_policy(limits=[limits(daily_inflow_cap_minor=10**12)])
    await _days(world, 27_000)
    policy = await _policy(pool, platform.platform_id)
    assert policy.swing_threshold_bps == 3000
    assert await daily_swing.run_day(pool, platform.platform_id, DAY, policy) == 1
    [event] = await world.approver_a.events(rule=rpb.RISK_RULE_RATIO_SWING)
    assert event.account_id == world.ids["PLAT_001"]
    assert (event.observed, event.limit, event.held_minor, event.split_id) == (5000, 3000, 0, 0)
    evidence = json.loads(event.evidence_json)
    assert (evidence["share_bps"], evidence["previous_share_bps"]) == (454, 909)
    assert (evidence["total_minor"], evidence["previous_total_minor"]) == (44_000, 22_000)


async def test_a_swing_above_30_percent_is_flagged_once(world: World, pool, platform):
    await world.file_policy(limits=[limits(daily_inflow_cap_minor=10**12)])
    await _days(world, 27_001)
    policy = await _policy(pool, platform.platform_id)
    # two processes' jobs at once: the day is claimed once
    results = await asyncio.gather(*(daily_swing.run_day(pool, platform.platform_id, DAY,
                                                         policy) for _ in range(3)))
    assert sorted(results, key=str) == [2, None, None]
    assert await daily_swing.run_day(pool, platform.platform_id, DAY, policy) is None
    events = await world.approver_a.events(rule=rpb.RISK_RULE_RATIO_SWING)
    assert {e.account_id for e in events} == {world.ids["PLAT_001"], world.ids["M_10086"]}
    merchant = next(e for e in events if e.account_id == world.ids["M_10086"])
    assert (merchant.amount_minor, merchant.observed) == (26_001, 3001)
    assert merchant.state == rpb.RISK_EVENT_STATE_OPEN


async def test_the_job_compares_yesterday_for_platforms_with_a_policy(world: World, pool,
                                                                      platform):
    from clearing.clock import ManualClock
    from clearing.config import RiskSettings

    await world.file_policy(limits=[limits(daily_inflow_cap_minor=10**12)])
    await _days(world, 27_001)
    clock = ManualClock(dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(0, 5),
                                            dt.timezone.utc))
    job = daily_swing.SwingJob(pool, clock, RiskSettings())
    await job.tick()
    assert len(await world.approver_a.events(rule=rpb.RISK_RULE_RATIO_SWING)) == 2
    await job.tick()  # done: nothing twice
    assert len(await world.approver_a.events(rule=rpb.RISK_RULE_RATIO_SWING)) == 2
    assert metrics.RISK_EVENTS_OPEN._value.get() >= 2  # the open events gauge


def test_flagged_arithmetic_is_exact():
    assert not daily_swing.flagged(26_000, 44_000, 10_000, 22_000, 3000)
    assert daily_swing.flagged(26_001, 44_000, 10_000, 22_000, 3000)
    assert not daily_swing.flagged(7_000, 10_000, 10_000, 10_000, 3000)  # -30% exactly
    assert daily_swing.flagged(6_999, 10_000, 10_000, 10_000, 3000)
    assert daily_swing.flagged(0, 10_000, 1, 10_000, 3000)  # gone: -100%
    assert not daily_swing.flagged(5, 10_000, 0, 10_000, 3000)  # new: no base
    assert not daily_swing.flagged(5, 0, 5, 10_000, 3000)  # no volume today
