"""The start of attempts in one statement: the pool worker's batches (batches.start_many) and the per-job runner."""

from __future__ import annotations

import time

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from jobs import batches, runner, submit
from jobs.models import EventKind, JobEvent, JobLog, JobStatus
from jobs.queues import Claim


def claim_of(job: JobLog) -> Claim:
    return Claim(
        job_id=str(job.pk),
        queue_name="jobs:default:normal",
        job_type=job.job_type,
        timeout=60,
        rate_limited=False,
        execution_id="test-execution",
        started_at=time.time(),
    )


def synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


def test_start_many__starts_the_waiting_jobs_and_leaves_the_session_durable(redis_url, transactional_db):
    waiting = [submit("greet", {"name": f"n{i}"}) for i in range(3)]
    canceled = submit("greet", {"name": "gone"})
    JobLog.objects.filter(pk=canceled.pk).update(status=JobStatus.CANCELED)

    with CaptureQueriesContext(connection) as queries:
        attempts, skipped = batches.start_many([claim_of(job) for job in [*waiting, canceled]], "worker-1")

    assert sorted(attempt.job.pk for attempt in attempts) == sorted(job.pk for job in waiting)
    assert [claim.job_id for claim, retry in skipped] == [str(canceled.pk)]
    rows = JobLog.objects.filter(pk__in=[job.pk for job in waiting])
    assert {(row.status, row.attempts, row.worker_name) for row in rows} == {(JobStatus.RUNNING, 1, "worker-1")}
    assert JobEvent.objects.filter(kind=EventKind.STARTED).count() == 3
    assert JobLog.objects.get(pk=canceled.pk).status == JobStatus.CANCELED
    if connection.vendor == "postgresql":
        [statement] = [q["sql"] for q in queries.captured_queries]
        # Its own transaction skips the WAL flush wait (see runner._ASYNC_COMMIT) ...
        assert "set_config('synchronous_commit', 'off', true)" in statement
        # ... and only its own: the connection's later writes are durable again.
        assert synchronous_commit() == "on"


def test_start_many__inside_a_callers_transaction_stays_durable(redis_url, transactional_db):
    job = submit("greet", {"name": "inside"})
    with transaction.atomic():
        attempts, _skipped = batches.start_many([claim_of(job)], "worker-1")
        if connection.vendor == "postgresql":
            # The caller's own writes in this transaction must not lose their durability to the start.
            assert synchronous_commit() == "on"
    assert [attempt.job.pk for attempt in attempts] == [job.pk]
    assert JobLog.objects.get(pk=job.pk).status == JobStatus.RUNNING


def test_run_job__starts_with_the_same_one_statement(redis_url, transactional_db):
    # The per-job runner (rq's worker modes) starts through runner.start_attempts too: one statement, not a
    # BEGIN/UPDATE/INSERT/COMMIT of its own.
    job = submit("greet", {"name": "single"})
    with CaptureQueriesContext(connection) as queries:
        runner.run_job(str(job.pk))

    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)
    assert list(job.events.order_by("id").values_list("kind", flat=True)) == [
        EventKind.SUBMITTED,
        EventKind.STARTED,
        EventKind.SUCCEEDED,
    ]
    if connection.vendor == "postgresql":
        starts = [q["sql"] for q in queries.captured_queries if "WITH started AS" in q["sql"]]
        assert len(starts) == 1
        assert "set_config('synchronous_commit', 'off', true)" in starts[0]
        assert synchronous_commit() == "on"
