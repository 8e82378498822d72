"""Progress from a handler reaches the JobLog row, coalesced so a tight loop does not hammer the database."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs import submit
from jobs.models import JobLog, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)


def test_progress__tight_loop_is_coalesced_and_final_state_kept(
    redis_url, drain, settings, django_capture_on_commit_callbacks
):
    settings.JOBS = {**settings.JOBS, "PROGRESS_MIN_INTERVAL": 0.5}
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("chatty", {"calls": 10_000})
    with CaptureQueriesContext(connection) as queries:
        drain(lambda: JobLog.objects.get(pk=job.pk).is_finished)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.result == 10_000
    assert (job.progress_percent, job.progress_message, job.progress_stage) == (100, "item 10000", "loop")
    assert job.progress_data == {"current": 10_000, "total": 10_000}
    progress_writes = [
        q for q in queries.captured_queries if q["sql"].startswith("UPDATE") and "progress_data" in q["sql"]
    ]
    # 10,000 calls; one write at most every 0.5 s while running, plus the final one with the outcome.
    assert 1 <= len(progress_writes) <= 10


def test_progress__visible_on_the_row_while_running(redis_url, workers):
    from django.db import transaction

    from tests.conftest import wait_for

    workers.start("--worker-class", "simple")
    with transaction.atomic():
        job = submit("cooperative", {"steps": 60})
    row = wait_for(
        lambda: JobLog.objects.filter(pk=job.pk, status=JobStatus.RUNNING, progress_percent__gt=0).first(),
        what="progress on a running job",
    )
    assert row.progress_stage == "work" and row.progress_message.startswith("step ")
    assert row.progress_data["total"] == 60
    wait_for(lambda: JobLog.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED, what="the job to finish")
