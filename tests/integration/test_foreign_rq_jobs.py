"""Only the runner runs: an rq job written into the engine's queues by anyone else is refused, never imported."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from jobs import submit
from jobs.models import JobLog, JobStatus
from jobs.transport.queues import RUNNER, get_queue, rq_queue_name

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = rq_queue_name("echo", "normal")


def failed_ids(redis_conn) -> set[str]:
    registry = FailedJobRegistry(QUEUE, connection=redis_conn, serializer=JSONSerializer)
    return set(registry.get_job_ids())


def refusal_of(redis_conn, job_id: str) -> str:
    result = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer).latest_result()
    assert result is not None, f"{job_id} has no failure recorded in rq"
    return str(result.exc_string)


def enqueue_foreign(redis_conn, func: str, *args: object, job_id: str | None = None, **options: object) -> str:
    # rq stores a dotted path without importing it: exactly what anyone with access to Redis can write.
    job = get_queue(QUEUE).enqueue(func, *args, job_id=job_id or str(uuid.uuid4()), **options)
    return str(job.id)


def test_a_job_naming_another_function_is_refused_and_nothing_runs(
    redis_url, redis_conn, drain, tmp_path: Path, caplog, django_capture_on_commit_callbacks
):
    trace = tmp_path / "ran"
    foreign = enqueue_foreign(redis_conn, "os.mkdir", str(trace))
    with django_capture_on_commit_callbacks(execute=True):
        ours = submit("echo", {"n": 1})

    with caplog.at_level(logging.ERROR, logger="jobs.transport.queues"):
        drain(lambda: JobLog.objects.get(pk=ours.pk).is_finished and foreign in failed_ids(redis_conn))

    assert not trace.exists(), "the foreign function ran"
    assert JobLog.objects.get(pk=ours.pk).status == JobStatus.SUCCEEDED
    assert "os.mkdir" in refusal_of(redis_conn, foreign) and "Refused" in refusal_of(redis_conn, foreign)
    assert any(foreign in record.getMessage() and "Refused" in record.getMessage() for record in caplog.records)
    assert Job.fetch(foreign, connection=redis_conn, serializer=JSONSerializer).get_status() == "failed"
    assert not JobLog.objects.filter(pk=foreign).exists()


def test_the_runner_with_callbacks_is_refused(redis_url, redis_conn, drain, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        ours = submit("echo", {"n": 1})
    # A second hash under a fresh id that calls the runner on a real job, and asks rq to call back into os.
    from rq import Callback

    foreign = str(uuid.uuid4())
    get_queue(QUEUE).enqueue(RUNNER, foreign, job_id=foreign, on_success=Callback("os.abort"))

    drain(lambda: JobLog.objects.get(pk=ours.pk).is_finished and foreign in failed_ids(redis_conn))

    assert "callbacks" in refusal_of(redis_conn, foreign)
    assert JobLog.objects.get(pk=ours.pk).status == JobStatus.SUCCEEDED


def test_an_id_that_is_not_a_job_id_is_refused_not_handed_back_forever(
    redis_url, redis_conn, drain, django_capture_on_commit_callbacks
):
    # The runner's call, but under an id no JobLog row can have: once, this made the worker hand the claim back to
    # its queue again and again.
    foreign = enqueue_foreign(redis_conn, RUNNER, "not-a-uuid", job_id="not-a-uuid")
    with django_capture_on_commit_callbacks(execute=True):
        ours = submit("echo", {"n": 1})

    drain(lambda: JobLog.objects.get(pk=ours.pk).is_finished and foreign in failed_ids(redis_conn), timeout=10)

    assert "not a job id" in refusal_of(redis_conn, foreign)
    assert get_queue(QUEUE).count == 0


def test_the_runner_on_another_jobs_id_is_refused(redis_url, redis_conn, drain, django_capture_on_commit_callbacks):
    # A hash whose call names a real job but whose own id differs: running it would run that job a second time.
    with django_capture_on_commit_callbacks(execute=True):
        ours = submit("echo", {"n": 1})
    foreign = enqueue_foreign(redis_conn, RUNNER, str(ours.pk))

    drain(lambda: JobLog.objects.get(pk=ours.pk).is_finished and foreign in failed_ids(redis_conn))

    assert "other than its own id" in refusal_of(redis_conn, foreign)
    assert JobLog.objects.get(pk=ours.pk).attempts == 1
