"""The finished-job rollup: the dashboard's charts give the same numbers from it as counting JobLog directly, before
the first roll-up, after it, after late commits and after retention deleted the rows it counted."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db import connections as db_connections
from django.test.utils import CaptureQueriesContext

from jobs import rollup, scheduler
from jobs.models import FinishedJobCount, JobLog, JobStatus
from jobs.monitoring import get_finished_series, get_timings
from jobs.retention import cleanup_finished_jobs
from tests.factories import make_job

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 5, 4, 12, 30, 20, tzinfo=UTC)
QUEUES = ["echo", "greet"]


def finished(status: str, at: datetime, job_type: str = "echo") -> JobLog:
    job = make_job(job_type=job_type, queue=job_type, status=status)
    JobLog.objects.filter(pk=job.pk).update(finished_at=at)
    return job


def charts(now: datetime) -> dict:
    return {**get_finished_series(QUEUES, now=now), "week": get_timings(QUEUES, now=now)["week"]}


def direct(now: datetime) -> dict:
    """The charts counted the plain way, from every JobLog row in Python: what the rollup must agree with."""
    rows = list(JobLog.objects.filter(queue__in=QUEUES, finished_at__isnull=False).values_list("finished_at", "status"))

    def series(first: datetime, step: timedelta, buckets: int) -> dict:
        out = {"start": first.isoformat(), "step_seconds": int(step.total_seconds())}
        for status in ("succeeded", "failed"):
            counts = [0] * buckets
            for at, row_status in rows:
                index = (at - first) // step
                if row_status == status and 0 <= index < buckets:
                    counts[index] += 1
            out[status] = counts
        return out

    minute = now.replace(second=0, microsecond=0)
    hour = minute.replace(minute=0)
    return {
        "hour": series(minute - timedelta(minutes=59), timedelta(minutes=1), 60),
        "day": series(hour - timedelta(hours=23), timedelta(hours=1), 24),
        "week": series(rollup.week_start(now), timedelta(days=1), 7),
    }


def history() -> None:
    """Jobs finishing in several minutes, hours and days, in two queues, and some that no chart counts."""
    for minutes in (0, 1, 2, 3, 5, 59, 61, 75, 130, 60 * 5, 60 * 23 + 7, 60 * 30, 60 * 24 * 3, 60 * 24 * 6 + 3):
        at = NOW - timedelta(minutes=minutes, seconds=7)
        finished(JobStatus.SUCCEEDED, at)
        finished(JobStatus.SUCCEEDED, at, job_type="greet")
        if minutes % 2:
            finished(JobStatus.FAILED, at)
    finished(JobStatus.CANCELED, NOW - timedelta(minutes=4))  # neither throughput nor a failure
    finished(JobStatus.SUCCEEDED, NOW - timedelta(days=9))  # before the week: not backfilled
    make_job(status=JobStatus.QUEUED)


def test_charts__the_same_counts_before_and_after_rolling_up_and_after_a_late_commit():
    history()
    expected = direct(NOW)
    assert sum(expected["hour"]["succeeded"]) == 12 and sum(expected["week"]["failed"]) == 8
    assert charts(NOW) == expected  # a fresh install: nothing rolled up, all counted live

    report = rollup.roll_up(now=NOW, max_chunks=1000)
    assert report.rows_written > 0 and report.caught_up and charts(NOW) == expected
    # The last hour is kept per minute, older hours as one row per hour; nothing from before the week.
    recent = FinishedJobCount.objects.filter(bucket__gte=NOW - timedelta(minutes=60))
    assert set(recent.values_list("minutes", flat=True)) == {1}
    assert FinishedJobCount.objects.get(bucket="2026-04-28T12:00:00Z", queue="greet").minutes == 60
    assert not FinishedJobCount.objects.filter(bucket__lt=rollup.week_start(NOW)).exists()
    assert rollup.rolled_up_until() == datetime(2026, 5, 4, 12, 30, tzinfo=UTC)  # 12:30, the current minute, is open

    # A job that finished in an already rolled-up minute but committed only now, and one in the current minute.
    finished(JobStatus.FAILED, NOW - timedelta(minutes=2))
    finished(JobStatus.SUCCEEDED, NOW - timedelta(seconds=1))
    later = NOW + timedelta(seconds=30)
    rollup.roll_up(now=later)
    assert charts(later) == direct(later)
    assert direct(later) != expected


def test_roll_up__a_fresh_install_backfills_the_week_a_day_per_run_with_the_charts_right_meanwhile():
    history()
    runs = 0
    while True:
        report = rollup.roll_up(now=NOW)
        runs += 1
        assert report.chunks_counted <= rollup.MAX_CHUNKS
        assert charts(NOW) == direct(NOW)
        if report.caught_up:
            break
    assert runs == 7  # 6 days and 12 hours as hours, then this hour's minutes: 157 chunks of at most 24


def test_charts__read_the_rollup_and_only_the_rows_after_it():
    history()
    rollup.roll_up(now=NOW, max_chunks=1000)
    until = rollup.rolled_up_until()
    with CaptureQueriesContext(connection) as queries:
        charts(NOW)
    live = [q["sql"] for q in queries.captured_queries if 'FROM "jobs_joblog"' in q["sql"] and "COUNT(" in q["sql"]]
    assert len(live) == 3  # one per chart, each from where the rollup stops
    # The mark as each backend writes a datetime parameter into its SQL ("2026-… 00:00:00" on both).
    stamp = (until.strftime("%Y-%m-%d"), until.strftime("%H:%M:%S"))
    assert all(stamp[0] in sql and stamp[1] in sql for sql in live)


def test_roll_up__twice_or_from_two_schedulers_never_double_counts():
    history()
    rollup.roll_up(now=NOW, max_chunks=1000)
    rows = set(FinishedJobCount.objects.values_list("bucket", "queue", "job_type", "status", "count"))

    def roll_up_in_its_own_thread() -> None:
        try:
            rollup.roll_up(now=NOW)
        finally:
            db_connections.close_all()  # this thread's: an open one is reported when collected, and blocks teardown

    threads = [threading.Thread(target=roll_up_in_its_own_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(FinishedJobCount.objects.values_list("bucket", "queue", "job_type", "status", "count")) == rows
    assert charts(NOW) == direct(NOW)


def test_roll_up__merges_minutes_into_hours_as_they_age_and_prunes_after_eight_days():
    history()
    rollup.roll_up(now=NOW, max_chunks=1000)
    assert FinishedJobCount.objects.filter(bucket="2026-05-04T11:29:00Z", minutes=1).exists()  # 61 minutes ago
    later = NOW + timedelta(hours=2)
    report = rollup.roll_up(now=later)
    assert report.rows_merged > 0
    assert not FinishedJobCount.objects.filter(minutes=1, bucket__lt=rollup.hourly_before(later)).exists()
    assert charts(later) == direct(later)
    week_later = NOW + timedelta(days=8, minutes=1)
    rollup.roll_up(now=week_later)
    assert not FinishedJobCount.objects.filter(bucket__lt=week_later - rollup.KEEP).exists()


def test_retention__deleting_old_jobs_leaves_the_charts_as_they_were():
    history()
    rollup.roll_up(now=NOW, max_chunks=1000)
    before = charts(NOW)
    # The types keep 30 days: a clean-up 29 days on deletes what finished more than a day before NOW.
    assert cleanup_finished_jobs(now=NOW + timedelta(days=29)).jobs_deleted >= 6
    assert charts(NOW) == before
    assert direct(NOW)["week"] != before["week"]  # the rows themselves are gone


def test_scheduler__rolls_up_beside_the_reconciler(redis_url):
    finished(JobStatus.SUCCEEDED, rollup.week_start(datetime.now(UTC)) + timedelta(minutes=30))  # the first chunk
    scheduler.run_scheduler(threading.Event(), once=True)
    assert FinishedJobCount.objects.get(queue="echo").count == 1
    assert rollup.rolled_up_until() == rollup.week_start(datetime.now(UTC)) + rollup.MAX_CHUNKS * timedelta(hours=1)
