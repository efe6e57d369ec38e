"""The daily roll-ups (clearing.reports.rollup): a report reads the same figures from the
roll-ups as from the raw rows; rolling twice changes nothing; a late split is rolled again;
two processes never roll the same day at once."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from clearing.clock import Clock
from clearing.config import ReportSettings
from clearing.reports.rollup import roll_day, roll_due
from tests.report_support import (EXPECTED_LEGS, SPLIT_TOTAL, b2b_world, day_bounds,
                                  order_c, summary_rows, three_splits, today, totals)

TABLES = ("report_split_days", "report_account_days", "report_channel_days")


async def _snapshot(pool: asyncpg.Pool, platform_id: int) -> dict:
    out = {}
    for table in TABLES:
        rows = await pool.fetch(f"SELECT * FROM {table} WHERE platform_id = $1 ORDER BY 1, 2, 3,"
                                " 4, 5", platform_id)
        out[table] = [tuple(r) for r in rows]
    out["days"] = [tuple(r) for r in await pool.fetch(
        "SELECT day, split_count, transfer_count, roll_count FROM report_rollup_days"
        " WHERE platform_id = $1", platform_id)]
    return out


async def _figures(world, day):
    out = {}
    for name in ("split_summary", "transaction_flow", "channel_analysis"):
        out[name] = await world.reports.rows(name, day, day)
    return out


async def test_rollups_idempotent_and_late_split_rerolled(channel, client, platform,
                                                           database_url):
    world = await b2b_world(channel, client, database_url, platform)
    await three_splits(world)
    day = today()
    raw = await _figures(world, day)
    assert summary_rows(raw["split_summary"]) == EXPECTED_LEGS
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        clock = Clock()
        first = await roll_day(pool, clock, platform.platform_id, day)
        assert (first.outcome, first.split_count) == ("rolled", 3)
        rolled = await _snapshot(pool, platform.platform_id)
        assert len(rolled["report_split_days"]) == len(EXPECTED_LEGS)
        assert rolled["days"] == [(day, 3, rolled["days"][0][2], 1)]
        # the reports read the roll-ups now, with the same figures
        assert await _figures(world, day) == raw
        # rolling again, directly or by a pass a day later, changes nothing
        assert (await roll_day(pool, clock, platform.platform_id, day)).outcome == "fresh"
        settings = ReportSettings(rollup_grace_s=300, rollup_recheck_days=2)
        later = day_bounds(day, day)[1] + dt.timedelta(hours=1)  # today closed, not tomorrow
        await roll_due(pool, clock, settings, now=later)
        assert await _snapshot(pool, platform.platform_id) == rolled
        # a late split of the rolled day: the next pass rolls the day again
        await world.splits.split(order_c())
        await roll_due(pool, clock, settings, now=later)
        again = await _snapshot(pool, platform.platform_id)
        assert again["days"][0][1] == 4 and again["days"][0][3] == 2
        rows = await world.reports.rows("split_summary", day, day)
        assert int(totals(rows)["CNY"]["amount_minor"]) == SPLIT_TOTAL + 200_000
        assert summary_rows(rows)[("PLAT_001", 2, "base")] == (2, 40_000)
        # and the flow still ties to the balances
        flow = [r for r in await world.reports.rows("transaction_flow", day, day)
                if r["line"] == "detail"]
        for r in flow:
            balance = await client.balance(int(r["account_id"]))
            assert int(r["closing_minor"]) == balance.posted_minor
        # a week that holds the rolled day and raw days around it
        week = await world.reports.rows("split_summary", day - dt.timedelta(days=3),
                                        day + dt.timedelta(days=3))
        assert week == rows
        # two processes at once: one rolls, the other is refused the lock or finds it fresh
        await world.splits.split(order_c())
        outcomes = sorted(o.outcome for o in await asyncio.gather(
            roll_day(pool, clock, platform.platform_id, day),
            roll_day(pool, clock, platform.platform_id, day)))
        assert outcomes in (["busy", "rolled"], ["fresh", "rolled"])
        assert (await _snapshot(pool, platform.platform_id))["days"][0][3] == 3
    finally:
        await pool.close()


async def test_days_are_local_days(channel, client, platform, database_url):
    """The roll-up's day is the platform's local day: the bounds are local midnights."""
    lo, hi = day_bounds(dt.date(2026, 1, 20), dt.date(2026, 1, 20))
    assert lo.astimezone(dt.timezone.utc) == dt.datetime(2026, 1, 19, 16, tzinfo=dt.timezone.utc)
    assert hi - lo == dt.timedelta(days=1)


async def test_the_job_rolls_closed_days(channel, client, platform, database_url):
    """The background job of a process (RollupJob): started on a clock a day ahead, it rolls
    today, which is closed for it; stopped, it ends."""
    from clearing.clock import ManualClock
    from clearing.reports.rollup import RollupJob

    world = await b2b_world(channel, client, database_url, platform)
    await world.splits.split(order_c())
    day = today()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    job = RollupJob(pool, ManualClock(day_bounds(day, day)[1] + dt.timedelta(hours=1)),
                    ReportSettings(rollup_interval_s=1, rollup_grace_s=300))
    try:
        job.start()

        async def rolled() -> bool:
            return await pool.fetchval("SELECT split_count FROM report_rollup_days"
                                       " WHERE platform_id = $1 AND day = $2",
                                       platform.platform_id, day) == 1
        for _ in range(1200):  # it rolls every platform of the test database, in id order
            if await rolled():
                break
            await asyncio.sleep(0.05)
        assert await rolled()
    finally:
        await job.stop()
        await pool.close()
