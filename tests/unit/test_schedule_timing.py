"""Schedule timing maths: cron in a time zone, intervals, once, catch-up after downtime, validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobs.exceptions import InvalidSchedule
from jobs.models import JobSchedule
from jobs.scheduler import due_ticks, following_tick, upcoming_runs, validate_timing

NOW = datetime(2026, 3, 27, 12, 0, 30, tzinfo=UTC)  # a Friday, two days before Paris moves to summer time


def cron(expr: str, tz: str = "UTC", **kw) -> JobSchedule:
    return JobSchedule(name="s", job_type="echo", kind="cron", cron=expr, timezone=tz, **kw)


def test_cron__runs_in_its_time_zone_across_dst():
    weekdays_9am = cron("0 9 * * 1-5", tz="Europe/Paris")
    runs = upcoming_runs(weekdays_9am, 3, now=NOW)
    assert [r.astimezone(ZoneInfo("Europe/Paris")).hour for r in runs] == [9, 9, 9]
    # Friday 9:00 CET is 08:00 UTC; Monday after the change is 9:00 CEST = 07:00 UTC.
    assert runs[0] == datetime(2026, 3, 30, 7, 0, tzinfo=UTC) and runs[0].weekday() == 0
    assert all(r.tzinfo is not None for r in runs)


def test_cron__every_five_minutes():
    assert upcoming_runs(cron("*/5 * * * *"), 3, now=NOW) == [
        datetime(2026, 3, 27, 12, 5, tzinfo=UTC),
        datetime(2026, 3, 27, 12, 10, tzinfo=UTC),
        datetime(2026, 3, 27, 12, 15, tzinfo=UTC),
    ]


def test_interval__steps_from_next_run():
    every_90s = JobSchedule(kind="interval", interval_seconds=90, next_run_at=NOW + timedelta(seconds=10))
    assert upcoming_runs(every_90s, 3, now=NOW) == [NOW + timedelta(seconds=s) for s in (10, 100, 190)]
    assert following_tick(every_90s, NOW) == NOW + timedelta(seconds=90)


def test_once__a_single_run_then_none():
    later = NOW + timedelta(hours=1)
    assert upcoming_runs(JobSchedule(kind="once", run_at=later), 5, now=NOW) == [later]
    assert upcoming_runs(JobSchedule(kind="once", run_at=later, last_run_at=NOW), 5, now=NOW) == []


@pytest.mark.parametrize("catch_up", [1, 3])
def test_due_ticks__catch_up_is_bounded_after_downtime(catch_up):
    # Down for ten minutes on a per-minute schedule: ten ticks were missed.
    every_minute = JobSchedule(kind="interval", interval_seconds=60, next_run_at=NOW - timedelta(minutes=10))
    ticks, next_run = due_ticks(every_minute, NOW, catch_up)
    assert ticks == [NOW - timedelta(minutes=k) for k in range(catch_up - 1, -1, -1)]
    assert next_run == NOW + timedelta(minutes=1)


def test_due_ticks__long_downtime_on_a_per_second_schedule_is_arithmetic():
    every_second = JobSchedule(kind="interval", interval_seconds=1, next_run_at=NOW - timedelta(days=7))
    ticks, next_run = due_ticks(every_second, NOW, 2)
    assert ticks == [NOW - timedelta(seconds=1), NOW] and next_run == NOW + timedelta(seconds=1)


def test_due_ticks__cron_walks_missed_ticks():
    every_5 = cron("*/5 * * * *", next_run_at=datetime(2026, 3, 27, 11, 40, tzinfo=UTC))
    ticks, next_run = due_ticks(every_5, NOW, 2)
    assert ticks == [datetime(2026, 3, 27, 11, 55, tzinfo=UTC), datetime(2026, 3, 27, 12, 0, tzinfo=UTC)]
    assert next_run == datetime(2026, 3, 27, 12, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "cron_expr", "interval", "run_at", "tz", "message"),
    [
        ("cron", "61 * * * *", None, None, "UTC", "not a cron expression"),
        ("cron", "* * * *", None, None, "UTC", "not a cron expression"),
        ("cron", "0 0 31 2 *", None, None, "UTC", "never fires"),
        ("cron", "*/5 * * * *", None, None, "Mars/Olympus", "Unknown time zone"),
        ("interval", "", 0, None, "UTC", "at least 1"),
        ("interval", "", None, None, "UTC", "at least 1"),
        ("once", "", None, None, "UTC", "needs run_at"),
        ("weekly", "", None, None, "UTC", "kind must be"),
    ],
)
def test_validate_timing__refuses_with_a_clear_message(kind, cron_expr, interval, run_at, tz, message):
    with pytest.raises(InvalidSchedule, match=message):
        validate_timing(kind, cron_expr, interval, run_at, tz)


def test_validate_timing__accepts_good_ones():
    validate_timing("cron", "0 9 * * 1-5", None, None, "Europe/Paris")
    validate_timing("interval", "", 1, None, "UTC")
    validate_timing("once", "", None, NOW, "UTC")
