"""Payout schedules end to end: SetPayoutSchedule through gRPC, the Scheduler ticking on a
moved clock against the real database and ledger writer, and the payouts it makes.

The module runs its own in-process server on a ManualClock (so transfers, schedules and
payouts share one moved time line) without a background scheduler or payout worker: only
the Scheduler instances the tests tick make payouts. Its times are in 2096-2098, in
increasing order through the module (the clock only moves forward), so no real-clock
scheduler of another server on the same database ever finds these schedules due.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest

from clearing import server
from clearing.clock import ManualClock
from clearing.payout import service
from clearing.payout.model import SCHEDULER, PayoutOrigin
from clearing.payout.schedule import (RunOutcome, Scheduler, SchedulerSettings,
                                      run_request_id, set_calendar_day, unset_calendar_day)
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import payout_pb2 as pb
from tests.conftest import server_settings
from tests.payout_support import Payouts, party, set_config
from tests.support import Client, details, rid

SHANGHAI = ZoneInfo("Asia/Shanghai")
START = dt.datetime(2096, 1, 1, tzinfo=dt.timezone.utc)


def sh(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    """A Shanghai wall-clock time, in UTC."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(
        dt.timezone.utc)


@pytest.fixture(scope="module")
async def moved(database_url, redis_url, redis_prefix):
    """(server, clock): a server on a ManualClock, no payout worker, no background
    scheduler."""
    clock = ManualClock(START)
    srv = await server.start(
        server_settings(database_url, redis_url, redis_prefix, run_worker=False,
                        scheduler=SchedulerSettings(enabled=False)),
        migrate=False, clock=clock)
    yield srv, clock
    await srv.stop()


@pytest.fixture(scope="module")
async def moved_channel(moved):
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{moved[0].port}")
    yield ch
    await ch.close()


@pytest.fixture
async def env(moved, moved_channel, platform, database_url):
    """The platform's clients on the moved server; its schedules are removed afterwards."""
    srv, clock = moved
    await set_config(database_url, platform.platform_id, min_amount_minor=1)
    yield Env(srv, clock, Client(moved_channel, platform.key),
              Payouts(moved_channel, platform.key), platform.platform_id)
    async with srv.pool.acquire() as conn:
        await conn.execute("DELETE FROM payout_schedules WHERE platform_id = $1",
                           platform.platform_id)


class Env:
    def __init__(self, srv, clock: ManualClock, client: Client, payouts: Payouts,
                 platform_id: int) -> None:
        self.srv, self.clock, self.client, self.payouts = srv, clock, client, payouts
        self.platform_id = platform_id

    def move_to(self, when: dt.datetime) -> None:
        assert when >= self.clock.now(), "the module's clock only moves forward"
        self.clock.advance(when - self.clock.now())

    def scheduler(self, **changes) -> Scheduler:
        return Scheduler(self.srv.payouts, SchedulerSettings(**changes))

    async def tick(self, scheduler: Scheduler) -> list[RunOutcome]:
        """One sweep; the outcomes of this platform's schedules (a schedule another module
        left due in the shared database would be run too, but is not this test's)."""
        return [o for o in await scheduler.tick() if o.platform_id == self.platform_id]

    async def set(self, account_id: int, cycle: int, *, request_id: str | None = None,
                  **fields) -> pb.PayoutSchedule:
        response = await self.payouts.call("SetPayoutSchedule", pb.SetPayoutScheduleRequest(
            request_id=rid() if request_id is None else request_id,
            schedule=pb.PayoutSchedule(account_id=account_id, cycle=cycle, **fields)))
        return response.schedule

    async def scheduled(self, account_id: int) -> list[tuple[int, str]]:
        """(amount_minor, request_id) of the account's scheduled payouts, oldest first."""
        async with self.srv.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT amount_minor, request_id, requested_by FROM payouts"
                " WHERE account_id = $1 AND origin = $2 ORDER BY payout_id",
                account_id, int(PayoutOrigin.SCHEDULE))
        assert all(r["requested_by"] == SCHEDULER for r in rows)
        return [(r["amount_minor"], r["request_id"]) for r in rows]

    async def row(self, account_id: int):
        async with self.srv.pool.acquire() as conn:
            return await conn.fetchrow(
                "SELECT next_run_at, last_run_at, last_error, last_payout_id"
                " FROM payout_schedules WHERE account_id = $1", account_id)


def ts(moment: dt.datetime) -> int:
    return int(moment.timestamp())


async def _invalid(call, fields: list[str]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert details(err.value)[1] == fields


# ---- SetPayoutSchedule ----------------------------------------------------------------------

async def test_set_schedule_validates_every_field(env):
    env.move_to(sh(2096, 1, 10, 10))
    account = (await env.client.open("m")).account_id
    D0, WEEKLY, MONTHLY = pb.PAYOUT_CYCLE_D0, pb.PAYOUT_CYCLE_WEEKLY, pb.PAYOUT_CYCLE_MONTHLY
    await _invalid(env.set(account, pb.PAYOUT_CYCLE_UNSPECIFIED), ["schedule.cycle"])
    await _invalid(env.set(account, 9), ["schedule.cycle"])
    await _invalid(env.set(account, WEEKLY), ["schedule.weekday"])
    await _invalid(env.set(account, WEEKLY, weekday=8), ["schedule.weekday"])
    await _invalid(env.set(account, D0, weekday=1), ["schedule.weekday"])
    await _invalid(env.set(account, MONTHLY, month_day=32), ["schedule.month_day"])
    await _invalid(env.set(account, MONTHLY), ["schedule.month_day"])
    await _invalid(env.set(account, WEEKLY, weekday=2, month_day=3), ["schedule.month_day"])
    await _invalid(env.set(account, D0, min_amount_minor=-1), ["schedule.min_amount_minor"])
    await _invalid(env.set(account, D0, time_zone="Mars/Olympus_Mons"),
                   ["schedule.time_zone"])
    await _invalid(env.set(account, D0, time_zone="../etc/passwd"), ["schedule.time_zone"])
    await _invalid(env.set(0, pb.PAYOUT_CYCLE_UNSPECIFIED, weekday=-1, request_id=""),
                   ["request_id", "schedule.account_id", "schedule.cycle",
                    "schedule.weekday"])
    async with env.srv.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM payout_schedules WHERE"
                                   " account_id = $1", account) == 0


async def test_set_schedule_answers_next_run_and_is_idempotent(env, database_url):
    account = (await env.client.open("m")).account_id
    key = rid()
    # Tuesday 2096-01-10 10:00 Shanghai: weekly on Friday -> Friday 13th 02:00 Shanghai
    weekly = await env.set(account, pb.PAYOUT_CYCLE_WEEKLY, weekday=5,
                           min_amount_minor=5_000, request_id=key)
    assert (weekly.account_id, weekly.cycle, weekly.weekday, weekly.month_day) == (
        account, pb.PAYOUT_CYCLE_WEEKLY, 5, 0)
    assert (weekly.min_amount_minor, weekly.currency_code, weekly.time_zone) == (
        5_000, "CNY", "Asia/Shanghai")
    assert weekly.next_run_time.seconds == ts(sh(2096, 1, 13, 2))
    assert weekly.update_time.seconds == ts(env.clock.now())
    again = await env.set(account, pb.PAYOUT_CYCLE_WEEKLY, weekday=5, min_amount_minor=5_000,
                          request_id=key)
    assert again == weekly
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.set(account, pb.PAYOUT_CYCLE_WEEKLY, weekday=4, request_id=key)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(err.value)[0] == "REQUEST_ID_REUSED"
    # another time zone: Friday 02:00 in New York (EST, UTC-5)
    ny = await env.set(account, pb.PAYOUT_CYCLE_WEEKLY, weekday=5, time_zone="America/New_York")
    assert ny.next_run_time.seconds == ts(dt.datetime(2096, 1, 13, 7, tzinfo=dt.timezone.utc))
    # D0 and MANUAL show no next run time
    d0 = await env.set(account, pb.PAYOUT_CYCLE_D0)
    assert not d0.HasField("next_run_time")
    manual = await env.set(account, pb.PAYOUT_CYCLE_MANUAL)
    assert not manual.HasField("next_run_time")
    assert (await env.row(account))["next_run_at"] is None


async def test_set_schedule_refuses_accounts_it_cannot_pay(env, moved_channel, database_url):
    custodial = (await env.client.open("c", kind=lpb.ACCOUNT_KIND_CUSTODIAL,
                                       allow_negative=True)).account_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.set(custodial, pb.PAYOUT_CYCLE_D0)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(err.value)[0] == "ACCOUNT_KIND_NOT_PAYABLE"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.set(2**62, pb.PAYOUT_CYCLE_D0)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # another platform's account looks missing
    from clearing.tenancy import create_platform
    conn = await asyncpg.connect(database_url)
    try:
        _, other_key = await create_platform(conn, f"other_{rid()[:8]}",
                                             frozenset({"gateway", "operator"}))
    finally:
        await conn.close()
    theirs = (await Client(moved_channel, other_key).open("theirs")).account_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.set(theirs, pb.PAYOUT_CYCLE_D0)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(err.value)[0] == "ACCOUNT_NOT_FOUND"


# ---- the scheduler --------------------------------------------------------------------------

async def test_monthly_on_the_30th_runs_on_feb_29_in_a_leap_year(env):
    env.move_to(sh(2096, 2, 10, 10))
    p = await party(env.client, env.payouts, funds=12_345)
    s = await env.set(p.account, pb.PAYOUT_CYCLE_MONTHLY, month_day=30)
    assert s.next_run_time.seconds == ts(sh(2096, 2, 29, 2))   # a Wednesday
    sched = env.scheduler()
    env.move_to(sh(2096, 2, 29, 1, 59))
    assert await env.tick(sched) == []
    assert await env.scheduled(p.account) == []
    env.move_to(sh(2096, 2, 29, 2))
    [run] = await env.tick(sched)
    assert (run.account_id, run.amount_minor, run.error) == (p.account, 12_345, "")
    assert await env.scheduled(p.account) == [
        (12_345, run_request_id(p.account, sh(2096, 2, 29, 2)))]
    assert await env.tick(sched) == []
    row = await env.row(p.account)
    assert row["next_run_at"] == sh(2096, 3, 30, 2)   # Friday March 30
    assert row["last_payout_id"] == run.payout_id
    b = await env.client.balance(p.account)
    assert (b.available_minor, b.pending_debit_minor) == (0, 12_345)


async def test_d0_sweeps_at_every_tick_once_the_minimum_is_reached(env):
    env.move_to(sh(2098, 1, 6, 10))
    p = await party(env.client, env.payouts, funds=3_000)
    await env.set(p.account, pb.PAYOUT_CYCLE_D0, min_amount_minor=5_000)
    sched = env.scheduler()
    env.move_to(sh(2098, 1, 6, 10, 1))
    assert await env.tick(sched) == []             # 3,000 < 5,000: not due
    await env.client.transfer(p.custodial, p.account, 4_000)
    env.move_to(sh(2098, 1, 6, 10, 2))
    [first] = await env.tick(sched)
    assert first.amount_minor == 7_000
    assert await env.tick(sched) == []             # nothing left
    env.move_to(sh(2098, 1, 6, 10, 3))
    assert await env.tick(sched) == []
    await env.client.transfer(p.custodial, p.account, 6_000)
    env.move_to(sh(2098, 1, 6, 10, 4))
    [second] = await env.tick(sched)
    assert second.amount_minor == 6_000
    assert await env.scheduled(p.account) == [
        (7_000, run_request_id(p.account, first.due_at)),
        (6_000, run_request_id(p.account, second.due_at))]
    b = await env.client.balance(p.account)
    assert (b.available_minor, b.pending_debit_minor) == (0, 13_000)


async def test_t_plus_1_over_a_weekend(env):
    env.move_to(sh(2098, 1, 10, 10))            # Friday
    p = await party(env.client, env.payouts, funds=5_000)
    s = await env.set(p.account, pb.PAYOUT_CYCLE_T_PLUS_1)
    assert s.next_run_time.seconds == ts(sh(2098, 1, 13, 2))   # Monday 02:00
    sched = env.scheduler()
    env.move_to(sh(2098, 1, 10, 23))
    assert await env.tick(sched) == []
    env.move_to(sh(2098, 1, 11, 12))            # Saturday: funds of the next business day
    await env.client.transfer(p.custodial, p.account, 2_000)
    assert await env.tick(sched) == []
    env.move_to(sh(2098, 1, 12, 12))            # Sunday
    assert await env.tick(sched) == []
    assert await env.scheduled(p.account) == []
    env.move_to(sh(2098, 1, 13, 2))             # Monday: Friday's funds only
    [monday] = await env.tick(sched)
    assert monday.amount_minor == 5_000
    env.move_to(sh(2098, 1, 13, 15))
    await env.client.transfer(p.custodial, p.account, 300)   # Monday's: swept Tuesday
    assert await env.tick(sched) == []
    env.move_to(sh(2098, 1, 14, 2))             # Tuesday: the weekend's and Monday's
    [tuesday] = await env.tick(sched)
    assert tuesday.amount_minor == 2_300
    assert await env.scheduled(p.account) == [
        (5_000, run_request_id(p.account, sh(2098, 1, 13, 2))),
        (2_300, run_request_id(p.account, sh(2098, 1, 14, 2)))]
    assert (await env.row(p.account))["next_run_at"] == sh(2098, 1, 15, 2)


async def test_weekly_on_a_holiday_runs_once_on_the_next_business_day(env):
    holiday = dt.date(2098, 1, 22)              # a Wednesday
    async with env.srv.pool.acquire() as conn:
        await set_calendar_day(conn, holiday, False, "test holiday")
    try:
        env.move_to(sh(2098, 1, 20, 10))        # Monday
        p = await party(env.client, env.payouts, funds=8_000)
        s = await env.set(p.account, pb.PAYOUT_CYCLE_WEEKLY, weekday=3)
        assert s.next_run_time.seconds == ts(sh(2098, 1, 23, 2))   # Thursday
        sched = env.scheduler()
        env.move_to(sh(2098, 1, 22, 3))         # the holiday, after the usual hour
        assert await env.tick(sched) == []
        env.move_to(sh(2098, 1, 23, 2))
        [run] = await env.tick(sched)
        assert run.amount_minor == 8_000
        env.move_to(sh(2098, 1, 23, 9))
        assert await env.tick(sched) == []
        assert await env.scheduled(p.account) == [
            (8_000, run_request_id(p.account, sh(2098, 1, 23, 2)))]
        assert (await env.row(p.account))["next_run_at"] == sh(2098, 1, 29, 2)
    finally:
        async with env.srv.pool.acquire() as conn:
            await unset_calendar_day(conn, holiday)


async def test_monthly_on_the_31st_runs_on_feb_28(env):
    env.move_to(sh(2098, 2, 10, 10))
    p = await party(env.client, env.payouts, funds=4_444)
    s = await env.set(p.account, pb.PAYOUT_CYCLE_MONTHLY, month_day=31, min_amount_minor=100)
    assert s.next_run_time.seconds == ts(sh(2098, 2, 28, 2))   # a Friday
    sched = env.scheduler()
    env.move_to(sh(2098, 2, 27, 23, 59))
    assert await env.tick(sched) == []
    env.move_to(sh(2098, 2, 28, 2, 30))
    [run] = await env.tick(sched)
    assert run.amount_minor == 4_444
    env.move_to(sh(2098, 3, 1, 2))
    assert await env.tick(sched) == []
    assert await env.scheduled(p.account) == [
        (4_444, run_request_id(p.account, sh(2098, 2, 28, 2)))]
    assert (await env.row(p.account))["next_run_at"] == sh(2098, 3, 31, 2)


async def test_two_schedulers_ticking_together_make_one_payout_per_run(env):
    env.move_to(sh(2098, 3, 3, 10))             # Monday
    accounts = []
    for i in range(6):
        p = await party(env.client, env.payouts, funds=1_000 + i, prefix=f"a{i}-")
        await env.set(p.account, pb.PAYOUT_CYCLE_T_PLUS_1)
        accounts.append(p.account)
    first, second = env.scheduler(), env.scheduler()
    env.move_to(sh(2098, 3, 4, 2))
    a, b = await asyncio.gather(env.tick(first), env.tick(second))
    made = sorted((o.account_id, o.amount_minor) for o in a + b if o.payout_id)
    assert made == [(acct, 1_000 + i) for i, acct in enumerate(accounts)]
    for i, acct in enumerate(accounts):
        assert await env.scheduled(acct) == [
            (1_000 + i, run_request_id(acct, sh(2098, 3, 4, 2)))]
    a, b = await asyncio.gather(env.tick(first), env.tick(second))
    assert a == b == []


async def test_a_refusal_is_recorded_and_the_sweep_goes_on(env):
    env.move_to(sh(2098, 3, 10, 10))            # Monday
    unbound = await party(env.client, env.payouts, funds=2_000, bind=False, prefix="u-")
    bound = await party(env.client, env.payouts, funds=3_000, prefix="b-")
    await env.set(unbound.account, pb.PAYOUT_CYCLE_T_PLUS_1)
    await env.set(bound.account, pb.PAYOUT_CYCLE_T_PLUS_1)
    env.move_to(sh(2098, 3, 11, 2))
    runs = await env.tick(env.scheduler())
    assert sorted((o.account_id, o.amount_minor, o.error) for o in runs) == sorted([
        (unbound.account, 0, "NO_BANK_ACCOUNT"), (bound.account, 3_000, "")])
    row = await env.row(unbound.account)
    assert (row["last_error"], row["next_run_at"]) == ("NO_BANK_ACCOUNT", sh(2098, 3, 12, 2))
    assert await env.scheduled(unbound.account) == []
    b = await env.client.balance(unbound.account)
    assert (b.available_minor, b.pending_debit_minor) == (2_000, 0)


async def test_a_replay_after_a_crash_reuses_the_payout_of_the_run(env):
    env.move_to(sh(2098, 3, 17, 10))            # Monday
    p = await party(env.client, env.payouts, funds=9_000)
    await env.set(p.account, pb.PAYOUT_CYCLE_T_PLUS_1)
    due = sh(2098, 3, 18, 2)
    env.move_to(due)
    # a scheduler made the run's payout, then died before moving the schedule on
    made = await service.create_payout(
        env.srv.payouts, platform_id=env.platform_id, account_id=p.account,
        amount_minor=9_000, currency_code="CNY", request_id=run_request_id(p.account, due),
        origin=int(PayoutOrigin.SCHEDULE), requested_by=SCHEDULER)
    [run] = await env.tick(env.scheduler())
    assert (run.payout_id, run.amount_minor, run.skipped) == (made.payout_id, 9_000,
                                                              "ALREADY_DONE")
    assert await env.scheduled(p.account) == [(9_000, run_request_id(p.account, due))]
    assert (await env.row(p.account))["next_run_at"] == sh(2098, 3, 19, 2)


async def test_a_calendar_without_business_days_postpones_the_run(env):
    env.move_to(sh(2098, 5, 29, 10))            # Thursday
    p = await party(env.client, env.payouts, funds=1_000)
    await env.set(p.account, pb.PAYOUT_CYCLE_T_PLUS_1)
    days = [dt.date(2098, 5, 30) + dt.timedelta(days=i) for i in range(40)]
    async with env.srv.pool.acquire() as conn:
        for day in days:
            await set_calendar_day(conn, day, False, "test: no business day")
    try:
        env.move_to(sh(2098, 5, 30, 2))         # Friday, now a holiday, like the 39 days after
        [run] = await env.tick(env.scheduler())  # no next business day within 31 days
        assert (run.account_id, run.error, run.payout_id) == (
            p.account, "CALENDAR_NO_BUSINESS_DAY", 0)
        assert await env.scheduled(p.account) == []      # no payout without a next run
        row = await env.row(p.account)
        assert row["next_run_at"] == sh(2098, 5, 31, 2)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await env.set(p.account, pb.PAYOUT_CYCLE_T_PLUS_1)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details(err.value)[0] == "CALENDAR_NO_BUSINESS_DAY"
    finally:
        async with env.srv.pool.acquire() as conn:
            await conn.execute("DELETE FROM calendar_days WHERE day = ANY($1)", days)
