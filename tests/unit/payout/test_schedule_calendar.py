"""next_run and the business-day calendar: pure functions, exact instants."""

from __future__ import annotations

import datetime as dt

import pytest

from clearing.payout.calendar import (BusinessCalendar, NoBusinessDay, PayoutCycle,
                                      ScheduleSpec, month_day_in, next_run, run_at,
                                      t_plus_1_cutoff)

UTC = dt.timezone.utc
PLAIN = BusinessCalendar.of()


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def shanghai_2am(year: int, month: int, day: int) -> dt.datetime:
    """02:00 Asia/Shanghai (UTC+8) is 18:00 UTC the day before."""
    return utc(year, month, day, 2) - dt.timedelta(hours=8)


def test_business_days_are_monday_to_friday_plus_exceptions():
    cal = BusinessCalendar.of(holidays=[dt.date(2027, 10, 1)], workdays=[dt.date(2027, 10, 9)])
    assert cal.is_business_day(dt.date(2027, 9, 30)) is True      # Thursday
    assert cal.is_business_day(dt.date(2027, 10, 1)) is False     # Friday, holiday
    assert cal.is_business_day(dt.date(2027, 10, 2)) is False     # Saturday
    assert cal.is_business_day(dt.date(2027, 10, 9)) is True      # Saturday, make-up day
    assert cal.on_or_after(dt.date(2027, 10, 1)) == dt.date(2027, 10, 4)
    assert cal.before(dt.date(2027, 10, 4)) == dt.date(2027, 9, 30)


def test_manual_never_and_d0_now():
    after = utc(2027, 3, 3, 12)
    assert next_run(ScheduleSpec(PayoutCycle.MANUAL), after, PLAIN) is None
    assert next_run(ScheduleSpec(PayoutCycle.D0), after, PLAIN) == after


def test_naive_after_is_refused():
    with pytest.raises(ValueError):
        next_run(ScheduleSpec(PayoutCycle.T_PLUS_1), dt.datetime(2027, 1, 1), PLAIN)


def test_t_plus_1_next_business_day_at_two_local():
    spec = ScheduleSpec(PayoutCycle.T_PLUS_1)
    # Wednesday 2027-03-03 12:00 Shanghai -> Thursday 02:00 Shanghai
    assert next_run(spec, utc(2027, 3, 3, 4), PLAIN) == shanghai_2am(2027, 3, 4)
    # Wednesday 01:00 Shanghai (before the run hour) -> the same day's 02:00
    assert next_run(spec, utc(2027, 3, 2, 17), PLAIN) == shanghai_2am(2027, 3, 3)
    # exactly at a run -> the next one (strictly after)
    assert next_run(spec, shanghai_2am(2027, 3, 3), PLAIN) == shanghai_2am(2027, 3, 4)


def test_t_plus_1_over_a_weekend():
    spec = ScheduleSpec(PayoutCycle.T_PLUS_1)
    friday_noon = utc(2027, 3, 5, 4)
    assert next_run(spec, friday_noon, PLAIN) == shanghai_2am(2027, 3, 8)   # Monday
    saturday = utc(2027, 3, 6, 4)
    assert next_run(spec, saturday, PLAIN) == shanghai_2am(2027, 3, 8)


def test_t_plus_1_holidays_and_make_up_days():
    # Golden week 2027: Oct 1-7 off, Saturday Oct 9 worked.
    cal = BusinessCalendar.of(holidays=[dt.date(2027, 10, d) for d in range(1, 8)],
                              workdays=[dt.date(2027, 10, 9)])
    spec = ScheduleSpec(PayoutCycle.T_PLUS_1)
    assert next_run(spec, utc(2027, 9, 30, 4), cal) == shanghai_2am(2027, 10, 8)   # Friday
    assert next_run(spec, shanghai_2am(2027, 10, 8), cal) == shanghai_2am(2027, 10, 9)  # Sat
    assert next_run(spec, shanghai_2am(2027, 10, 9), cal) == shanghai_2am(2027, 10, 11)


def test_t_plus_1_cutoff_is_end_of_previous_business_day():
    # Monday's run takes what was available at the end of Friday (Saturday 00:00 local).
    cutoff = t_plus_1_cutoff(shanghai_2am(2027, 3, 8), "Asia/Shanghai", PLAIN)
    assert cutoff == utc(2027, 3, 6) - dt.timedelta(hours=8)
    # Tuesday's run: the end of Monday.
    cutoff = t_plus_1_cutoff(shanghai_2am(2027, 3, 9), "Asia/Shanghai", PLAIN)
    assert cutoff == utc(2027, 3, 9) - dt.timedelta(hours=8)


def test_weekly_on_its_weekday():
    spec = ScheduleSpec(PayoutCycle.WEEKLY, weekday=3)  # Wednesday
    # Monday 2027-03-01 -> Wednesday 03-03
    assert next_run(spec, utc(2027, 3, 1, 4), PLAIN) == shanghai_2am(2027, 3, 3)
    # Wednesday after the run -> next Wednesday
    assert next_run(spec, utc(2027, 3, 3, 4), PLAIN) == shanghai_2am(2027, 3, 10)


def test_weekly_on_a_holiday_moves_to_the_next_business_day():
    cal = BusinessCalendar.of(holidays=[dt.date(2027, 3, 10)])   # a Wednesday
    spec = ScheduleSpec(PayoutCycle.WEEKLY, weekday=3)
    assert next_run(spec, utc(2027, 3, 3, 4), cal) == shanghai_2am(2027, 3, 11)
    # asked on the holiday itself, after its nominal run hour: still the moved run
    assert next_run(spec, utc(2027, 3, 10, 4), cal) == shanghai_2am(2027, 3, 11)
    # and after the moved run: the next week
    assert next_run(spec, shanghai_2am(2027, 3, 11), cal) == shanghai_2am(2027, 3, 17)


def test_weekly_on_a_weekend_day():
    spec = ScheduleSpec(PayoutCycle.WEEKLY, weekday=6)   # Saturday -> Monday
    assert next_run(spec, utc(2027, 3, 3, 4), PLAIN) == shanghai_2am(2027, 3, 8)
    cal = BusinessCalendar.of(workdays=[dt.date(2027, 3, 13)])   # a make-up Saturday
    assert next_run(spec, shanghai_2am(2027, 3, 8), cal) == shanghai_2am(2027, 3, 13)


def test_weekly_long_holiday_merges_two_weeks_into_one_run():
    cal = BusinessCalendar.of(holidays=[dt.date(2027, 3, 1) + dt.timedelta(days=i)
                                        for i in range(10)])   # Mon 1 .. Wed 10
    spec = ScheduleSpec(PayoutCycle.WEEKLY, weekday=1)   # Mondays 1 and 8 -> Thursday 11
    first = next_run(spec, utc(2027, 2, 26, 4), cal)
    assert first == shanghai_2am(2027, 3, 11)
    assert next_run(spec, first, cal) == shanghai_2am(2027, 3, 15)


def test_monthly_month_ends():
    assert month_day_in(2027, 2, 31) == dt.date(2027, 2, 28)
    assert month_day_in(2028, 2, 31) == dt.date(2028, 2, 29)
    assert month_day_in(2027, 4, 31) == dt.date(2027, 4, 30)
    spec = ScheduleSpec(PayoutCycle.MONTHLY, month_day=31)
    # after the Jan 31 2027 run (a Sunday -> Monday Feb 1) comes Feb 28 2027 (a Sunday ->
    # Monday Mar 1), then Mar 31 (Wednesday)
    jan = next_run(spec, utc(2027, 1, 15), PLAIN)
    assert jan == shanghai_2am(2027, 2, 1)
    feb = next_run(spec, jan, PLAIN)
    assert feb == shanghai_2am(2027, 3, 1)
    assert next_run(spec, feb, PLAIN) == shanghai_2am(2027, 3, 31)


def test_monthly_february_in_a_leap_year():
    spec = ScheduleSpec(PayoutCycle.MONTHLY, month_day=30)
    # Jan 30 2028 is a Sunday -> Monday Jan 31; Feb 29 2028 is a Tuesday
    jan = next_run(spec, utc(2028, 1, 10), PLAIN)
    assert jan == shanghai_2am(2028, 1, 31)
    assert next_run(spec, jan, PLAIN) == shanghai_2am(2028, 2, 29)


def test_monthly_shortened_day_lands_once_even_when_the_29th_moves():
    spec = ScheduleSpec(PayoutCycle.MONTHLY, month_day=29)
    # Feb 2027 has 28 days: the 28th (Sunday) -> Monday Mar 1; then Mar 29 (Monday)
    feb = next_run(spec, utc(2027, 2, 1), PLAIN)
    assert feb == shanghai_2am(2027, 3, 1)
    assert next_run(spec, feb, PLAIN) == shanghai_2am(2027, 3, 29)


def test_monthly_day_1_on_a_holiday():
    cal = BusinessCalendar.of(holidays=[dt.date(2027, 10, d) for d in range(1, 8)])
    spec = ScheduleSpec(PayoutCycle.MONTHLY, month_day=1)
    assert next_run(spec, utc(2027, 9, 15), cal) == shanghai_2am(2027, 10, 8)
    # asked during the holiday: the moved run is still ahead
    assert next_run(spec, utc(2027, 10, 5), cal) == shanghai_2am(2027, 10, 8)


def test_time_zones():
    spec = ScheduleSpec(PayoutCycle.T_PLUS_1, time_zone="America/New_York")
    # Friday 2027-03-05 20:00 New York (Sat 01:00 UTC) -> Monday 02:00 EST = 07:00 UTC
    assert next_run(spec, utc(2027, 3, 6, 1), PLAIN) == utc(2027, 3, 8, 7)
    # the same instant in Shanghai is Saturday 09:00 -> Monday 02:00 CST
    shanghai = ScheduleSpec(PayoutCycle.T_PLUS_1)
    assert next_run(shanghai, utc(2027, 3, 6, 1), PLAIN) == shanghai_2am(2027, 3, 8)
    # on New York's DST start (Sunday Mar 14 2027) 02:00 does not exist: fold=0 takes the
    # EST offset, 07:00 UTC (03:00 EDT); the day after, 02:00 EDT = 06:00 UTC
    assert run_at(dt.date(2027, 3, 14), "America/New_York", 2) == utc(2027, 3, 14, 7)
    assert run_at(dt.date(2027, 3, 15), "America/New_York", 2) == utc(2027, 3, 15, 6)


def test_run_hour_is_configurable():
    spec = ScheduleSpec(PayoutCycle.T_PLUS_1)
    assert next_run(spec, utc(2027, 3, 3, 4), PLAIN, run_hour=0) == utc(2027, 3, 3, 16)


def test_no_business_day_for_too_long_is_an_error():
    cal = BusinessCalendar.of(holidays=[dt.date(2027, 1, 1) + dt.timedelta(days=i)
                                        for i in range(60)])
    with pytest.raises(NoBusinessDay):
        next_run(ScheduleSpec(PayoutCycle.T_PLUS_1), utc(2027, 1, 1), cal)
    with pytest.raises(NoBusinessDay):
        t_plus_1_cutoff(utc(2027, 2, 20), "Asia/Shanghai", cal)
