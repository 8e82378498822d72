"""The start of attempts in one statement: the pool worker's batches (batches.start_many) and the per-job runner."""

from __future__ import annotations

import time

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs import batches, registry, runner, submit
from jobs.models import EventKind, JobEvent, JobLog, JobStatus
from jobs.progress import JobContext
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


def test_run_job__starts_and_records_its_success_with_one_statement_each(redis_url, transactional_db):
    # The per-job runner (rq's worker modes) starts through runner.start_attempts and records a success through
    # runner.record_successes, as the pool worker does for a batch: not a BEGIN/UPDATE/INSERT/COMMIT of its own.
    job = submit("greet", {"name": "single"})
    with CaptureQueriesContext(connection) as queries:
        runner.run_job(str(job.pk))

    job.refresh_from_db()
    assert (job.status, job.attempts, job.result, job.progress_percent) == (JobStatus.SUCCEEDED, 1, "Hello single", 100)
    assert job.finished_at is not None
    assert list(job.events.order_by("id").values_list("kind", "attempt")) == [
        (EventKind.SUBMITTED, 0),
        (EventKind.STARTED, 1),
        (EventKind.SUCCEEDED, 1),
    ]
    statements = [q["sql"].lstrip() for q in queries.captured_queries]
    # Its type has no rate limit, so nothing is decided before the start: no read of the row comes first.
    first_on_the_table = next(sql for sql in statements if "jobs_joblog" in sql)
    assert first_on_the_table.startswith(("WITH started AS", "UPDATE")), first_on_the_table
    if connection.vendor == "postgresql":
        # Starting it, recording its outcome.
        [start, finish] = statements
        assert start.startswith("WITH started AS") and finish.startswith("WITH done AS")
        assert "set_config('synchronous_commit', 'off', true)" in start
        assert "set_config" not in finish  # an outcome is durable
        assert synchronous_commit() == "on"


def test_run_job__a_rate_limited_type_is_read_and_admitted_before_it_starts(redis_url, transactional_db):
    job = submit("throttled", {})
    with CaptureQueriesContext(connection) as queries:
        runner.run_job(str(job.pk))

    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)
    statements = [q["sql"].lstrip() for q in queries.captured_queries if "jobs_joblog" in q["sql"]]
    # The fast start left it alone (its type takes a token first); then it was read, admitted and started.
    [fast_start, read, start] = statements[:3]
    assert fast_start.startswith(("WITH started AS", "UPDATE")) and read.startswith("SELECT")
    assert start.startswith(("WITH started AS", "UPDATE"))


def test_run_job__a_canceled_job_is_not_started(redis_url, transactional_db):
    job = submit("greet", {"name": "gone"})
    JobLog.objects.filter(pk=job.pk).update(status=JobStatus.CANCELED)
    assert runner.run_job(str(job.pk)) is None
    job.refresh_from_db()
    assert (job.status, job.attempts, job.started_at) == (JobStatus.CANCELED, 0, None)
    assert not job.events.filter(kind=EventKind.STARTED).exists()


def test_start_attempts__starts_only_jobs_of_the_types_given(redis_url, transactional_db):
    # This database's statement and the ORM's (any other database) leave the other types' jobs waiting.
    for start in (runner.start_attempts, runner._start_attempts_orm):
        greet, throttled = submit("greet", {"name": "x"}), submit("throttled", {})
        started = start([greet.pk, throttled.pk], timezone.now(), "worker-1", job_types=["greet", "no-such-type"])
        assert [job.pk for job in started] == [greet.pk]
        assert JobLog.objects.get(pk=throttled.pk).status == JobStatus.QUEUED
        assert not JobEvent.objects.filter(job=throttled, kind=EventKind.STARTED).exists()
    assert runner.start_attempts([greet.pk], timezone.now(), "worker-1", job_types=[]) == []


def _written(job: JobLog) -> dict[str, object]:
    # What a start or an outcome wrote, leaving out what differs between any two jobs anyway.
    values = {field.attname: getattr(job, field.attname) for field in JobLog._meta.concrete_fields}
    for per_job in ("id", "payload", "created_at", "enqueued_at", "updated_at", "started_at", "finished_at"):
        values.pop(per_job)
    return values


def _event_kinds(job: JobLog) -> list[tuple[str, str, int, dict[str, object]]]:
    return list(job.events.order_by("id").values_list("kind", "status", "attempt", "data"))


def test_start_and_finish__this_databases_statements_write_what_the_orm_writes(redis_url, transactional_db):
    # PostgreSQL and SQLite start and finish attempts with their own plain statements; the ORM path (any other
    # database) is the reference: same rows returned, same columns written, same events.
    ours, reference = ([submit("greet", {"name": f"{side}{i}"}) for i in range(3)] for side in "or")
    # Per-item failures of an earlier attempt: a new attempt starts without them.
    JobLog.objects.filter(pk__in=[ours[0].pk, reference[0].pk]).update(
        failed_items=[{"item": "row 3", "error": "bad date"}], failed_items_count=1
    )
    now = timezone.now()
    started = runner.start_attempts([job.pk for job in ours], now, "worker-1")
    expected = runner._start_attempts_orm([job.pk for job in reference], now, "worker-1")
    assert sorted(job.pk for job in started) == sorted(job.pk for job in ours)
    for returned, by_orm in zip(sorted(started, key=str), sorted(expected, key=str), strict=True):
        assert _written(returned) == _written(by_orm)
        assert returned.started_at == by_orm.started_at == now
        assert returned.payload == JobLog.objects.get(pk=returned.pk).payload
        assert _written(JobLog.objects.get(pk=returned.pk)) == _written(JobLog.objects.get(pk=by_orm.pk))
        assert _event_kinds(returned) == _event_kinds(by_orm)

    # One of each side was taken over meanwhile (the reconciler requeued it: another attempt count).
    taken_over = [started[0].pk, expected[0].pk]
    JobLog.objects.filter(pk__in=taken_over).update(attempts=5)

    def attempts_of(jobs: list[JobLog]) -> list[batches.Attempt]:
        made = []
        for job in jobs:
            attempt = batches.Attempt(claim_of(job), job, registry.get(job.job_type), JobContext(job, 1))
            attempt.ctx.message, attempt.ctx.stage = "all done", "last"
            attempt.outcome = {"greeting": "hello", "counts": [1, 2]}
            made.append(attempt)
        return made

    runner.record_successes(attempts_of(started))
    written_by_orm = runner._record_successes_orm(attempts_of(expected), timezone.now())
    assert written_by_orm == {job.pk for job in expected[1:]}
    for returned, by_orm in zip(started, expected, strict=True):  # the taken-over ones first on both sides
        row, reference_row = JobLog.objects.get(pk=returned.pk), JobLog.objects.get(pk=by_orm.pk)
        assert (row.status == JobStatus.SUCCEEDED) == (row.pk not in taken_over)
        assert _written(row) == _written(reference_row)
        assert (row.result is None) == (row.pk in taken_over)
        assert _event_kinds(row) == _event_kinds(reference_row)
