"""`clearing calendar set|unset|list` through PlatformService (an admin key), and the
scheduler's calendar cache picking a change up when it refreshes."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest

from clearing.clock import ManualClock
from clearing.payout.schedule import CalendarCache, load_calendar
from tests.support import admin_cli, new_admin_key

# Days far from any other test's (all of them Mondays-Fridays or weekends of 2099).
HOLIDAY = dt.date(2099, 6, 3)    # Wednesday
WORKDAY = dt.date(2099, 6, 6)    # Saturday


class _Done:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
async def cli(running, database_url):
    admin_key = await new_admin_key(database_url)

    async def run(*args: str) -> _Done:
        return _Done(*await admin_cli(running.port, admin_key, "calendar", *args))

    return run


async def test_calendar_cli_sets_lists_and_unsets_days(database_url, cli):
    done = await cli("set", HOLIDAY.isoformat(), "--holiday", "--note", "test")
    assert done.returncode == 0, done.stderr
    done = await cli("set", WORKDAY.isoformat(), "--workday")
    assert done.returncode == 0, done.stderr
    listed = await cli("list", "--from", "2099-06-01", "--to", "2099-06-30")
    assert listed.stdout.splitlines() == ["2099-06-03 Wed holiday  test",
                                          "2099-06-06 Sat working day"]
    conn = await asyncpg.connect(database_url)
    try:
        cal = await load_calendar(conn, dt.date(2099, 6, 1))
        assert (cal.is_business_day(HOLIDAY), cal.is_business_day(WORKDAY)) == (False, True)
        assert cal.is_business_day(dt.date(2099, 6, 4)) is True
        assert (await cli("unset", HOLIDAY.isoformat())).returncode == 0
        assert (await cli("unset", WORKDAY.isoformat())).returncode == 0
        cal = await load_calendar(conn, dt.date(2099, 6, 1))
        assert (cal.is_business_day(HOLIDAY), cal.is_business_day(WORKDAY)) == (True, False)
    finally:
        await conn.execute("DELETE FROM calendar_days WHERE day IN ($1, $2)", HOLIDAY, WORKDAY)
        await conn.close()


async def test_calendar_cli_refuses_bad_input(cli):
    done = await cli("set", "2099-02-30", "--holiday")
    assert done.returncode != 0 and "is not a date" in done.stderr
    done = await cli("set", "2099-06-03")
    assert done.returncode == 2   # --holiday or --workday is required


async def test_the_cache_reloads_after_its_refresh_interval(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    clock = ManualClock(dt.datetime(2099, 6, 1, tzinfo=dt.timezone.utc))
    cache = CalendarCache(pool, clock, refresh_s=60)
    try:
        assert (await cache.get()).is_business_day(HOLIDAY) is True
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO calendar_days (day, business) VALUES ($1, false)",
                               HOLIDAY)
        clock.advance(dt.timedelta(seconds=59))
        assert (await cache.get()).is_business_day(HOLIDAY) is True    # still cached
        clock.advance(dt.timedelta(seconds=1))
        assert (await cache.get()).is_business_day(HOLIDAY) is False
    finally:
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM calendar_days WHERE day = $1", HOLIDAY)
        await pool.close()
