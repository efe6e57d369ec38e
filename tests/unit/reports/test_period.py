"""Report days in the platform's time zone: the UTC ranges of the days not rolled, and the
last closed day the roll-up job may roll."""

from __future__ import annotations

import datetime as dt

from clearing.reports.period import day_start, unrolled_ranges
from clearing.reports.rollup import last_closed_day

Z = "Asia/Shanghai"
UTC = dt.timezone.utc
D = dt.date(2026, 1, 20)


def d(n: int) -> dt.date:
    return D + dt.timedelta(days=n)


def test_a_local_day_starts_at_local_midnight():
    assert day_start(D, Z) == dt.datetime(2026, 1, 19, 16, tzinfo=UTC)


def test_nothing_rolled_is_one_range():
    assert unrolled_ranges(d(0), d(2), set(), Z) == [(day_start(d(0), Z), day_start(d(3), Z))]


def test_rolled_days_split_the_ranges():
    ranges = unrolled_ranges(d(0), d(5), {d(1), d(2), d(4)}, Z)
    assert ranges == [(day_start(d(0), Z), day_start(d(1), Z)),
                      (day_start(d(3), Z), day_start(d(4), Z)),
                      (day_start(d(5), Z), day_start(d(6), Z))]


def test_every_day_rolled_reads_no_raw_rows():
    assert unrolled_ranges(d(0), d(2), {d(0), d(1), d(2)}, Z) == []


def test_with_no_end_the_days_after_the_last_rolled_are_one_open_range():
    assert unrolled_ranges(d(0), None, {d(0), d(1)}, Z) == [(day_start(d(2), Z), None)]
    assert unrolled_ranges(d(0), None, {d(1)}, Z) == [
        (day_start(d(0), Z), day_start(d(1), Z)), (day_start(d(2), Z), None)]
    assert unrolled_ranges(d(0), None, set(), Z) == [(day_start(d(0), Z), None)]


def test_a_day_is_closed_once_its_end_and_the_grace_have_passed():
    end = day_start(d(1), Z)  # the end of D
    assert last_closed_day(end + dt.timedelta(seconds=299), Z, 300) == d(-1)
    assert last_closed_day(end + dt.timedelta(seconds=300), Z, 300) == D
