"""jobs.lifecycle: the start and success of batches (the ORM, and PostgreSQL's one-statement fast path), the
conditional outcomes, and the one hand-off to Redis."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs import lifecycle, submit
from jobs.lifecycle import batches
from jobs.lifecycle import postgresql as lifecycle_postgresql
from jobs.live.context import JobContext
from jobs.models import EventKind, JobEvent, JobLog, JobStatus
from tests.conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


def test_start__starts_jobs_in_any_waiting_status_and_leaves_the_others(redis_url):
    waiting = [submit("greet", {"name": f"n{i}"}) for i in range(3)]
    JobLog.objects.filter(pk=waiting[1].pk).update(status=JobStatus.PENDING)  # its push failed
    JobLog.objects.filter(pk=waiting[2].pk).update(status=JobStatus.SCHEDULED)  # deferred by a limit
    canceled = submit("greet", {"name": "gone"})
    JobLog.objects.filter(pk=canceled.pk).update(status=JobStatus.CANCELED)

    with CaptureQueriesContext(connection) as queries:
        started = lifecycle.start([job.pk for job in [*waiting, canceled]], "worker-1")

    assert sorted(job.pk for job in started) == sorted(job.pk for job in waiting)
    assert {(job.status, job.attempts, job.worker_name) for job in started} == {(JobStatus.RUNNING, 1, "worker-1")}
    rows = JobLog.objects.filter(pk__in=[job.pk for job in waiting])
    assert {(row.status, row.attempts, row.worker_name) for row in rows} == {(JobStatus.RUNNING, 1, "worker-1")}
    assert JobEvent.objects.filter(kind=EventKind.STARTED).count() == 3
    assert JobLog.objects.get(pk=canceled.pk).status == JobStatus.CANCELED
    if connection.vendor == "postgresql":
        [statement] = [q["sql"] for q in queries.captured_queries]
        # Its own transaction skips the WAL flush wait (see lifecycle.postgresql._ASYNC_COMMIT) ...
        assert "set_config('synchronous_commit', 'off', true)" in statement
        # ... and only its own: the connection's later writes are durable again.
        assert synchronous_commit() == "on"


def test_start__inside_a_callers_transaction_stays_durable(redis_url):
    job = submit("greet", {"name": "inside"})
    with transaction.atomic():
        started = lifecycle.start([job.pk], "worker-1")
        if connection.vendor == "postgresql":
            # The caller's own writes in this transaction must not lose their durability to the start.
            assert synchronous_commit() == "on"
    assert [row.pk for row in started] == [job.pk]
    assert JobLog.objects.get(pk=job.pk).status == JobStatus.RUNNING


def test_start__only_jobs_of_the_types_given(redis_url):
    greet, throttled = submit("greet", {"name": "x"}), submit("throttled", {})
    started = lifecycle.start([greet.pk, throttled.pk], "worker-1", job_types=["greet", "no-such-type"])
    assert [job.pk for job in started] == [greet.pk]
    assert JobLog.objects.get(pk=throttled.pk).status == JobStatus.QUEUED
    assert not JobEvent.objects.filter(job=throttled, kind=EventKind.STARTED).exists()
    assert lifecycle.start([throttled.pk], "worker-1", job_types=[]) == []


def _written(job: JobLog) -> dict[str, object]:
    # What a start or an outcome wrote, leaving out what differs between any two jobs anyway.
    values = {field.attname: getattr(job, field.attname) for field in JobLog._meta.concrete_fields}
    for per_job in ("id", "payload", "created_at", "enqueued_at", "updated_at", "started_at", "finished_at"):
        values.pop(per_job)
    return values


def _timeline(job: JobLog) -> list[tuple[str, str, int, dict[str, object]]]:
    return list(job.events.order_by("id").values_list("kind", "status", "attempt", "data"))


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="the fast path exists on PostgreSQL only")
def test_postgresql_fast_path__writes_what_the_orm_writes(redis_url):
    # The ORM path (every other database) is the reference: same rows returned, same columns, same events.
    ours, reference = ([submit("greet", {"name": f"{side}{i}"}) for i in range(3)] for side in "or")
    # Per-item failures of an earlier attempt: a new attempt starts without them.
    JobLog.objects.filter(pk__in=[ours[0].pk, reference[0].pk]).update(
        failed_items=[{"item": "row 3", "error": "bad date"}], failed_items_count=1
    )
    now = timezone.now()
    started = lifecycle_postgresql.start([job.pk for job in ours], now, "worker-1", job_types=None)
    expected = batches._start_orm([job.pk for job in reference], now, "worker-1", job_types=None)
    assert sorted(job.pk for job in started) == sorted(job.pk for job in ours)
    for returned, by_orm in zip(sorted(started, key=str), sorted(expected, key=str), strict=True):
        assert _written(returned) == _written(by_orm)
        assert returned.started_at == by_orm.started_at == now
        assert _written(JobLog.objects.get(pk=returned.pk)) == _written(JobLog.objects.get(pk=by_orm.pk))
        assert _timeline(returned) == _timeline(by_orm)

    # One of each side was taken over meanwhile (the reconciler requeued it: another attempt count).
    taken_over = [started[0].pk, expected[0].pk]
    JobLog.objects.filter(pk__in=taken_over).update(attempts=5)
    for job in [*started, *expected]:
        job.progress_message, job.progress_stage, job.progress_percent = "all done", "last", 100
        job.result = {"greeting": "hello", "counts": [1, 2]}
    later = timezone.now()
    assert lifecycle_postgresql.succeed(started, later) == {job.pk for job in started[1:]}
    assert batches._succeed_orm(list(expected), later) == {job.pk for job in expected[1:]}
    for returned, by_orm in zip(started, expected, strict=True):
        row, reference_row = JobLog.objects.get(pk=returned.pk), JobLog.objects.get(pk=by_orm.pk)
        assert (row.status == JobStatus.SUCCEEDED) == (row.pk not in taken_over)
        assert _written(row) == _written(reference_row)
        assert (row.result is None) == (row.pk in taken_over)
        assert _timeline(row) == _timeline(reference_row)


def test_succeed__writes_each_attempt_only_while_it_is_still_running(redis_url):
    jobs = lifecycle.start([submit("greet", {"name": f"n{i}"}).pk for i in range(3)], "worker-1")
    JobLog.objects.filter(pk=jobs[0].pk).update(attempts=7)  # taken over by the reconciler
    JobLog.objects.filter(pk=jobs[1].pk).update(status=JobStatus.CANCELED)
    successes = []
    for job in jobs:
        ctx = JobContext(job, job.attempts)
        ctx.progress(40, "nearly", stage="end", current=4)
        successes.append(lifecycle.Success(job, ctx.progress_fields(), {"n": str(job.pk)}))

    assert lifecycle.succeed(successes) == {jobs[2].pk}
    row = JobLog.objects.get(pk=jobs[2].pk)
    assert (row.status, row.result, row.progress_percent) == (JobStatus.SUCCEEDED, {"n": str(jobs[2].pk)}, 100)
    assert (row.progress_message, row.progress_stage, row.progress_data) == ("nearly", "end", {"current": 4})
    assert [JobLog.objects.get(pk=job.pk).status for job in jobs[:2]] == [JobStatus.RUNNING, JobStatus.CANCELED]
    assert JobEvent.objects.filter(kind=EventKind.SUCCEEDED).count() == 1


def test_fail__a_taken_over_attempt_keeps_the_newer_state(redis_url):
    [job] = lifecycle.start([submit("greet", {"name": "x"}).pk], "worker-1")
    JobLog.objects.filter(pk=job.pk).update(attempts=2)
    assert lifecycle.fail(job, lifecycle.Error("ValueError", "late")) is False
    row = JobLog.objects.get(pk=job.pk)
    assert (row.status, row.error_type) == (JobStatus.RUNNING, "")
    assert not row.events.filter(kind=EventKind.FAILED).exists()


def test_hand_over__a_failed_push_leaves_the_rows_pending_for_the_reconciler(settings, redis_url):
    settings.JOBS = {**settings.JOBS, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with transaction.atomic():
        job = submit("echo", {"n": 1})
        assert JobLog.objects.get(pk=job.pk).status == JobStatus.QUEUED  # the status its push will give it
    job.refresh_from_db()
    assert (job.status, job.enqueued_at) == (JobStatus.PENDING, None)
    assert list(job.events.values_list("kind", flat=True)) == [EventKind.SUBMITTED]
