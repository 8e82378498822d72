"""Progress from a handler reaches the JobLog row, coalesced so a tight loop does not hammer the database."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs import lifecycle, submit
from jobs.live.context import JobContext
from jobs.models import JobLog, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)


def test_progress__tight_loop_is_coalesced_and_final_state_kept(
    redis_url, drain, settings, django_capture_on_commit_callbacks
):
    settings.JOBS = {**settings.JOBS, "PROGRESS_MIN_INTERVAL": 0.5}
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("chatty", {"calls": 10_000})
    drain(lambda: JobLog.objects.get(pk=job.pk).is_finished)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.result == 10_000
    assert (job.progress_percent, job.progress_message, job.progress_stage) == (100, "item 10000", "loop")
    assert job.progress_data == {"current": 10_000, "total": 10_000}


def test_progress__writes_at_most_one_row_update_per_interval(redis_url, settings):
    settings.JOBS = {**settings.JOBS, "PROGRESS_MIN_INTERVAL": 0.2}
    [job] = lifecycle.start([submit("chatty", {"calls": 1}).pk], "worker-1")
    ctx = JobContext(job, job.attempts)
    started = time.monotonic()
    with CaptureQueriesContext(connection) as queries:
        calls = 0
        while time.monotonic() - started < 1.0:  # as a tight loop in a handler would, for a second
            calls += 1
            ctx.progress(50, f"item {calls}", stage="loop", current=calls)
    progress_writes = [q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    # Tens of thousands of calls; a write at most every 0.2 s.
    assert calls > 1000 and 1 <= len(progress_writes) <= 6
    assert JobLog.objects.get(pk=job.pk).progress_message.startswith("item ")


def test_progress__visible_on_the_row_while_running(redis_url, workers):
    from django.db import transaction

    from tests.conftest import wait_for

    workers.start()
    with transaction.atomic():
        job = submit("cooperative", {"steps": 60})
    row = wait_for(
        lambda: JobLog.objects.filter(pk=job.pk, status=JobStatus.RUNNING, progress_percent__gt=0).first(),
        what="progress on a running job",
    )
    assert row.progress_stage == "work" and row.progress_message.startswith("step ")
    assert row.progress_data["total"] == 60
    wait_for(lambda: JobLog.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED, what="the job to finish")
