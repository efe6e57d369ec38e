"""The scheduler's settings from the environment: defaults, and every limit enforced."""

from __future__ import annotations

import pytest

from clearing.payout.schedule import SchedulerSettings, run_request_id


def test_defaults():
    s = SchedulerSettings.from_env({})
    assert (s.enabled, s.tick_s, s.batch_max, s.run_hour, s.calendar_refresh_s,
            s.d0_retry_s) == (True, 10, 100, 2, 60, 3600)


def test_values_from_the_environment():
    s = SchedulerSettings.from_env({
        "CLEARING_PAYOUT_SCHEDULER": "0", "CLEARING_PAYOUT_SCHEDULE_TICK_S": "30",
        "CLEARING_PAYOUT_SCHEDULE_BATCH": "1000", "CLEARING_PAYOUT_RUN_HOUR": "0",
        "CLEARING_CALENDAR_REFRESH_S": "5", "CLEARING_PAYOUT_D0_RETRY_S": "60"})
    assert (s.enabled, s.tick_s, s.batch_max, s.run_hour, s.calendar_refresh_s,
            s.d0_retry_s) == (False, 30, 1000, 0, 5, 60)


@pytest.mark.parametrize("name,value", [
    ("CLEARING_PAYOUT_SCHEDULE_TICK_S", "0"), ("CLEARING_PAYOUT_SCHEDULE_TICK_S", "3601"),
    ("CLEARING_PAYOUT_SCHEDULE_BATCH", "1001"), ("CLEARING_PAYOUT_RUN_HOUR", "24"),
    ("CLEARING_PAYOUT_SCHEDULER", "2"), ("CLEARING_CALENDAR_REFRESH_S", "x")])
def test_out_of_range_values_stop_the_server(name, value):
    with pytest.raises(SystemExit):
        SchedulerSettings.from_env({name: value})


def test_the_request_id_of_a_run_is_its_due_time_in_utc():
    import datetime as dt
    from zoneinfo import ZoneInfo
    due = dt.datetime(2098, 1, 13, 2, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert run_request_id(42, due) == "schedule:42:2098-01-12T18:00:00+00:00"
