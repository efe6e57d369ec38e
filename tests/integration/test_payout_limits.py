"""Every payout limit at its exact boundary (accepted) and one unit past it (refused, nothing
held), and the daily maximum counted over the platform's local day.

The module runs its own server on a ManualClock, without payout worker or scheduler, so
payouts stay QUEUED and `created_at` is the moved time. Its times are in 2099 and only move
forward through the module."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest

from clearing import server
from clearing.clock import ManualClock
from clearing.payout import store
from clearing.payout.model import PayoutConfig
from clearing.payout.schedule import SchedulerSettings
from clearing.errors import InvalidArgument
from clearing.limits import TRANSFERS_PER_PAYOUT_MAX
from tests.conftest import server_settings
from tests.payout_support import Payouts, party
from tests.support import Client, details

SHANGHAI = ZoneInfo("Asia/Shanghai")
START = dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)
INV = grpc.StatusCode.INVALID_ARGUMENT


def sh(month: int, day: int, hour: int, minute: int) -> dt.datetime:
    """A Shanghai wall-clock time of 2099, in UTC."""
    return dt.datetime(2099, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(
        dt.timezone.utc)


@pytest.fixture(scope="module")
async def moved(database_url, redis_url, redis_prefix):
    clock = ManualClock(START)
    srv = await server.start(
        server_settings(database_url, redis_url, redis_prefix, run_worker=False,
                        scheduler=SchedulerSettings(enabled=False)),
        migrate=False, clock=clock)
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
    try:
        yield ch, clock
    finally:
        await ch.close()
        await srv.stop()


@pytest.fixture
def env(moved, platform):
    ch, clock = moved
    return Client(ch, platform.key), Payouts(ch, platform.key), clock


def move_to(clock: ManualClock, when: dt.datetime) -> None:
    assert when >= clock.now(), "the module's clock only moves forward"
    clock.advance(when - clock.now())


async def configure(database_url: str, platform_id: int, *, fee_fixed_minor: int = 0,
                    fee_bps: int = 0, fee_account_id: int = 0, min_amount_minor: int = 1,
                    max_amount_minor: int | None = None, daily_max_minor: int = 10**13,
                    bank_transfer_max_minor: int = 50_000_000,
                    time_zone: str = "Asia/Shanghai") -> None:
    if max_amount_minor is None:  # what the most bank transfers can carry
        max_amount_minor = TRANSFERS_PER_PAYOUT_MAX * bank_transfer_max_minor
    conn = await asyncpg.connect(database_url)
    try:
        await store.save_config(conn, PayoutConfig(
            platform_id, "CNY", fee_fixed_minor, fee_bps, fee_account_id, min_amount_minor,
            max_amount_minor, daily_max_minor, 10**12, bank_transfer_max_minor, time_zone))
    finally:
        await conn.close()


async def refused(call, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value
    got_reason, fields = details(err.value)
    assert got_reason == reason
    if code == INV:
        assert fields == ["amount_minor"]


async def available(client: Client, account_id: int) -> int:
    return (await client.balance(account_id)).available_minor


async def test_minimum_and_maximum_payout_are_accepted_exactly(env, platform, database_url):
    client, payouts, _ = env
    p = await party(client, payouts, funds=100_000)
    await configure(database_url, platform.platform_id, min_amount_minor=100,
                    max_amount_minor=4_000)
    await refused(payouts.request(p.account, 99), INV, "AMOUNT_BELOW_MINIMUM")
    await refused(payouts.request(p.account, 4_001), INV, "AMOUNT_ABOVE_MAXIMUM")
    assert await available(client, p.account) == 100_000
    low = await payouts.request(p.account, 100)
    high = await payouts.request(p.account, 4_000)
    assert (low.amount_minor, high.amount_minor) == (100, 4_000)
    assert [t.amount_minor for t in high.transfers] == [4_000]
    assert await available(client, p.account) == 100_000 - 4_100


async def test_amount_just_above_the_fee_is_accepted(env, platform, database_url):
    client, payouts, _ = env
    p = await party(client, payouts, funds=10_000)
    await configure(database_url, platform.platform_id, fee_fixed_minor=50,
                    fee_account_id=p.fee)
    await refused(payouts.request(p.account, 50), INV, "AMOUNT_NOT_ABOVE_FEE")
    payout = await payouts.request(p.account, 51)  # net 1: one transfer of 1
    assert (payout.fee_minor, payout.net_amount_minor) == (50, 1)
    assert [t.amount_minor for t in payout.transfers] == [1]


async def test_exact_multiple_of_the_transfer_maximum_makes_no_zero_transfer(env, platform,
                                                                           database_url):
    client, payouts, _ = env
    p = await party(client, payouts, funds=300_000_000)
    await configure(database_url, platform.platform_id)  # 500,000.00 per bank transfer
    payout = await payouts.request(p.account, 100_000_000)  # 1,000,000.00 = 2 x 500,000.00
    assert [t.amount_minor for t in payout.transfers] == [50_000_000, 50_000_000]
    assert [t.sequence for t in payout.transfers] == [1, 2]
    one = await payouts.request(p.account, 50_000_000)
    assert [t.amount_minor for t in one.transfers] == [50_000_000]
    over = await payouts.request(p.account, 50_000_001)
    assert [t.amount_minor for t in over.transfers] == [50_000_000, 1]


async def test_exactly_the_maximum_number_of_bank_transfers(env, platform, database_url):
    client, payouts, _ = env
    p = await party(client, payouts, funds=1_000_000)
    # transfers of at most 100: the maximum payout is what 1000 of them carry, 100,000
    await configure(database_url, platform.platform_id, fee_fixed_minor=7,
                    fee_account_id=p.fee, bank_transfer_max_minor=100)
    assert TRANSFERS_PER_PAYOUT_MAX == 1000
    await refused(payouts.request(p.account, 100 * 1000 + 1), INV, "AMOUNT_ABOVE_MAXIMUM")
    assert await available(client, p.account) == 1_000_000
    payout = await payouts.request(p.account, 100 * 1000)  # net 99,993 after the fee of 7
    assert payout.net_amount_minor == 99_993
    assert len(payout.transfers) == 1000
    assert [t.amount_minor for t in payout.transfers] == [100] * 999 + [93]
    assert await available(client, p.account) == 1_000_000 - 100_000


async def test_a_maximum_more_transfers_would_carry_is_refused(platform, database_url):
    # 1000 transfers of 100 carry 100,000: that maximum is accepted, one unit more is not
    await configure(database_url, platform.platform_id, bank_transfer_max_minor=100,
                    max_amount_minor=100_000)
    with pytest.raises(InvalidArgument) as err:
        await configure(database_url, platform.platform_id, bank_transfer_max_minor=100,
                        max_amount_minor=100_001)
    assert [v.field for v in err.value.violations] == ["max_amount_minor"]
    assert "more than 1000 bank transfers" in err.value.violations[0].description


async def test_daily_maximum_is_reached_exactly_and_counted_over_the_local_day(
        env, platform, database_url):
    client, payouts, clock = env
    p = await party(client, payouts, funds=100_000)
    await configure(database_url, platform.platform_id, daily_max_minor=10_000)
    # 23:30 in Shanghai on 10 March (15:30 UTC)
    move_to(clock, sh(3, 10, 23, 30))
    await payouts.request(p.account, 6_000)
    await refused(payouts.request(p.account, 4_001), grpc.StatusCode.RESOURCE_EXHAUSTED,
                  "DAILY_LIMIT_EXCEEDED")
    reached = await payouts.request(p.account, 4_000)  # exactly the maximum: accepted
    assert reached.amount_minor == 4_000
    await refused(payouts.request(p.account, 1), grpc.StatusCode.RESOURCE_EXHAUSTED,
                  "DAILY_LIMIT_EXCEEDED")
    # 00:30 in Shanghai on 11 March: a new local day, although still 10 March (16:30) in UTC
    move_to(clock, sh(3, 11, 0, 30))
    assert clock.now().date() == dt.date(2099, 3, 10)
    fresh = await payouts.request(p.account, 10_000)
    assert fresh.amount_minor == 10_000
    await refused(payouts.request(p.account, 1), grpc.StatusCode.RESOURCE_EXHAUSTED,
                  "DAILY_LIMIT_EXCEEDED")
    assert await available(client, p.account) == 100_000 - 20_000


async def test_daily_maximum_follows_the_platforms_time_zone(env, platform, database_url):
    client, payouts, clock = env
    p = await party(client, payouts, funds=100_000)
    # New York: 23:30 local on 20 March and 00:30 local on 21 March are both 21 March in UTC
    # (03:30 / 04:30 or 04:30 / 05:30): one UTC day, two local days.
    await configure(database_url, platform.platform_id, daily_max_minor=5_000,
                    time_zone="America/New_York")
    ny = ZoneInfo("America/New_York")
    move_to(clock, dt.datetime(2099, 3, 20, 23, 30, tzinfo=ny).astimezone(dt.timezone.utc))
    await payouts.request(p.account, 5_000)
    await refused(payouts.request(p.account, 1), grpc.StatusCode.RESOURCE_EXHAUSTED,
                  "DAILY_LIMIT_EXCEEDED")
    move_to(clock, dt.datetime(2099, 3, 21, 0, 30, tzinfo=ny).astimezone(dt.timezone.utc))
    assert (await payouts.request(p.account, 5_000)).amount_minor == 5_000
    await refused(payouts.request(p.account, 1), grpc.StatusCode.RESOURCE_EXHAUSTED,
                  "DAILY_LIMIT_EXCEEDED")
    assert await available(client, p.account) == 90_000
