"""The engine end to end: submit, a real worker on real Redis, and the JobLog history."""

from __future__ import annotations

import pytest
from django.db import transaction
from redis import Redis

from jobs import cancel_job, get_or_submit, retry_job, submit
from jobs.exceptions import (
    IdempotencyConflict,
    InvalidPayload,
    InvalidSubmission,
    JobAlreadyFinished,
    JobNotRetryable,
    JobTypeForbidden,
    UnknownJobType,
)
from jobs.models import EventKind, JobEvent, JobLog, JobStatus
from jobs.transport.queues import get_queue, rq_queue_name
from tests.conftest import wait_for
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def events(job: JobLog) -> list[tuple[str, int]]:
    return list(job.events.order_by("created_at", "id").values_list("kind", "attempt"))


def recorded(redis_conn: Redis, key: str) -> list[str]:
    return [v.decode() for v in redis_conn.lrange(f"test:{key}", 0, -1)]


def fresh(job: JobLog) -> JobLog:
    return JobLog.objects.get(pk=job.pk)


def finished(job: JobLog) -> bool:
    return fresh(job).is_finished


def queued_in_redis(queue: str) -> int:
    return sum(get_queue(rq_queue_name(queue, p)).count for p in ("critical", "high", "normal", "low"))


def test_submit__runs_and_records_success(redis_url, drain, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("echo", {"hello": "world"})
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.enqueued_at is not None
    assert queued_in_redis("echo") == 1

    drain(lambda: finished(job))

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.result == {"echo": {"hello": "world"}, "attempt": 1, "job_id": str(job.id)}
    assert job.attempts == 1 and job.progress_percent == 100
    assert job.started_at <= job.finished_at
    assert events(job) == [(EventKind.SUBMITTED, 0), (EventKind.STARTED, 1), (EventKind.SUCCEEDED, 1)]


def test_submit__payload_validated_by_serializer(redis_url, drain, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("greet", {"name": "Ada", "times": "2"})
    assert job.payload == {"name": "Ada", "times": 2}  # stored as validated, not as sent
    drain(lambda: finished(job))
    assert fresh(job).result == "Hello Ada Hello Ada"


def test_submit__async_handler(redis_url, drain, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("async-echo", {"n": 1})
    drain(lambda: finished(job))
    job.refresh_from_db()
    assert (job.status, job.result) == (JobStatus.SUCCEEDED, {"echo": {"n": 1}})


def test_retry__backoff_then_failed_with_every_attempt_in_timeline(
    redis_url, redis_conn, drain, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("flaky", {"succeed_on": 99})
    drain(lambda: finished(job), timeout=30)

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.attempts == 3
    assert job.error_type == "ConnectionError" and job.error_message == "attempt 3 failed"
    assert 'raise ConnectionError(f"attempt {ctx.attempt} failed")' in job.traceback
    assert events(job) == [
        (EventKind.SUBMITTED, 0),
        (EventKind.STARTED, 1),
        (EventKind.RETRY_SCHEDULED, 1),
        (EventKind.STARTED, 2),
        (EventKind.RETRY_SCHEDULED, 2),
        (EventKind.STARTED, 3),
        (EventKind.FAILED, 3),
    ]
    retries = list(job.events.filter(kind=EventKind.RETRY_SCHEDULED).order_by("attempt"))
    assert [e.message for e in retries] == ["attempt 1 failed", "attempt 2 failed"]
    assert all("ConnectionError" in e.data["traceback"] for e in retries)
    # Backoff (0.2, 1) with equal jitter: wait n is in [d/2, d] for d = min(1, 0.2 * 2**(n-1)), so it grows.
    delays = [e.data["delay"] for e in retries]
    assert 0.1 <= delays[0] <= 0.2 and 0.2 <= delays[1] <= 0.4
    # And the attempts really were that far apart.
    starts = [float(v.split("@")[1]) for v in recorded(redis_conn, f"attempts:{job.id}")]
    assert len(starts) == 3
    assert starts[1] - starts[0] >= delays[0] and starts[2] - starts[1] >= delays[1]


def test_retry__succeeds_on_a_later_attempt(redis_url, drain, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("flaky", {"succeed_on": 2})
    drain(lambda: finished(job), timeout=30)
    job.refresh_from_db()
    assert (job.status, job.result, job.attempts) == (JobStatus.SUCCEEDED, "recovered", 2)
    # The error of the failed attempt stays in the timeline.
    assert job.events.get(kind=EventKind.RETRY_SCHEDULED).message == "attempt 1 failed"


@pytest.mark.parametrize("type_name", ["permanent", "picky"])
def test_retry__permanent_errors_are_not_retried(
    type_name, redis_url, redis_conn, drain, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit(type_name, {})
    drain(lambda: finished(job))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.attempts == 1
    assert recorded(redis_conn, f"attempts:{job.id}") == ["1"]
    assert job.error_type in {"PermanentError", "ValueError"}


def test_partial_results__failed_items_recorded(redis_url, drain, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("partial", {"rows": ["a@x.org", "nope", "b@x.org", "bad"]})
    drain(lambda: finished(job))
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.result == {"imported": 2}
    assert job.failed_items_count == 2
    assert job.failed_items == [
        {"item": "nope", "error": "not an email address"},
        {"item": "bad", "error": "not an email address"},
    ]


def test_partial_results__a_retry_starts_with_no_failed_items(redis_url, drain, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("partial-flaky", {"rows": ["a@x.org", "nope", "bad"]})
    drain(lambda: finished(job))
    job.refresh_from_db()
    assert (job.status, job.attempts, job.result) == (JobStatus.SUCCEEDED, 2, {"imported": 1})
    # The items of the failed first attempt are not counted again by the second.
    assert job.failed_items_count == 2 and [f["item"] for f in job.failed_items] == ["nope", "bad"]


def test_priority__critical_runs_before_normal_and_low(
    redis_url, redis_conn, drain, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        jobs = [submit("ordered", {"label": f"low{i}"}, priority="low") for i in range(3)]
        jobs += [submit("ordered", {"label": f"normal{i}"}) for i in range(3)]
        jobs += [submit("ordered", {"label": f"critical{i}"}, priority="critical") for i in range(3)]
        jobs += [submit("ordered", {"label": f"high{i}"}, priority="high") for i in range(3)]
    drain(lambda: all(finished(j) for j in jobs), queues=["ordered"], concurrency=1)
    order = recorded(redis_conn, "order")
    assert [label.rstrip("0123456789") for label in order] == ["critical"] * 3 + ["high"] * 3 + ["normal"] * 3 + [
        "low"
    ] * 3
    assert order[:3] == ["critical0", "critical1", "critical2"]  # FIFO within a level


def test_fairness__a_busy_queue_does_not_starve_another_of_its_level(
    redis_url, drain, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        busy = [submit("echo", {"n": n}) for n in range(30)]  # "echo" comes first by name
        other = submit("greet", {"name": "Ada"})
    drain(lambda: all(finished(j) for j in [*busy, other]), queues=["echo", "greet"], concurrency=1)
    finished_at = sorted(fresh(j).finished_at for j in busy)
    # The one "greet" job ran among the first "echo" ones, not after all thirty.
    assert fresh(other).finished_at < finished_at[len(finished_at) // 2]


def test_delay__scheduled_until_due(redis_url, drain, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("echo", {}, delay=1.5)
    job.refresh_from_db()
    assert job.status == JobStatus.SCHEDULED and job.run_at is not None
    drain(lambda: finished(job))
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.started_at >= job.run_at


def test_cancel__before_start_never_runs(redis_url, redis_conn, drain, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("cooperative", {"steps": 3})
        other = submit("echo", {})
    with django_capture_on_commit_callbacks(execute=True):
        cancel_job(job)
    assert fresh(job).status == JobStatus.CANCELED
    assert queued_in_redis("cooperative") == 0
    drain(lambda: finished(other))
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED and job.attempts == 0
    assert recorded(redis_conn, f"started:{job.id}") == []
    assert EventKind.STARTED not in [kind for kind, _ in events(job)]
    with pytest.raises(JobAlreadyFinished):
        cancel_job(job)


def test_cancel__runner_skips_a_canceled_row_still_in_redis(
    redis_url, redis_conn, drain, django_capture_on_commit_callbacks
):
    # The row is canceled while Redis still holds the job (the removal failed or raced): it still never runs.
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("cooperative", {"steps": 3})
    JobLog.objects.filter(pk=job.pk).update(status=JobStatus.CANCELED)
    drain(lambda: queued_in_redis("cooperative") == 0)
    assert recorded(redis_conn, f"started:{job.id}") == []
    assert fresh(job).status == JobStatus.CANCELED


def test_idempotency__replay_returns_the_first_job(redis_url, django_capture_on_commit_callbacks):
    alice, bob = make_user("alice"), make_user("bob")
    with django_capture_on_commit_callbacks(execute=True):
        first, created = get_or_submit("echo", {"a": 1}, user=alice, idempotency_key="k1")
        again, created_again = get_or_submit("echo", {"a": 1}, user=alice, idempotency_key="k1")
        bobs = submit("echo", {"a": 1}, user=bob, idempotency_key="k1")
    assert created and not created_again and again.pk == first.pk
    assert bobs.pk != first.pk  # the scope is owner + type
    assert JobLog.objects.count() == 2 and queued_in_redis("echo") == 2
    with pytest.raises(IdempotencyConflict):
        submit("echo", {"a": 2}, user=alice, idempotency_key="k1")
    assert JobLog.objects.count() == 2


def test_submit__bad_payload_writes_nothing(redis_url, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(InvalidPayload) as err:
        submit("greet", {"name": "x" * 50, "times": 9})
    assert set(err.value.errors) == {"name", "times"}
    assert "no more than 20 characters" in str(err.value.errors["name"][0])
    assert JobLog.objects.count() == 0 and JobEvent.objects.count() == 0
    assert queued_in_redis("greet") == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (("no-such-type", {}), {}, UnknownJobType),
        (("echo", ["not", "a", "dict"]), {}, InvalidPayload),
        (("echo", {}), {"priority": "urgent"}, InvalidSubmission),
        (("echo", {}), {"delay": -1}, InvalidSubmission),
        (("echo", {}), {"delay": 1, "run_at": "2030-01-01"}, InvalidSubmission),
        (("echo", {}), {"run_at": "tomorrow"}, InvalidSubmission),
        (("echo", {}), {"idempotency_key": ""}, InvalidSubmission),
        (("echo", {"blob": "x" * (1024 * 1024)}), {}, InvalidSubmission),
    ],
)
def test_submit__refused_input_changes_nothing(args, kwargs, error, redis_url, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(error) as err:
        submit(*args, **kwargs)
    assert str(err.value)  # a message a person can read
    assert JobLog.objects.count() == 0
    assert queued_in_redis("echo") == 0


def test_submit__staff_only_type(redis_url, django_capture_on_commit_callbacks):
    with pytest.raises(JobTypeForbidden):
        submit("admin-only", {}, user=make_user("carol"))
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("admin-only", {}, user=make_user("root", is_staff=True))
    assert fresh(job).status == JobStatus.QUEUED


def test_submit__rolled_back_transaction_enqueues_nothing(redis_url, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError):
        with transaction.atomic():
            submit("echo", {"n": 1})
            raise RuntimeError("the view failed after submitting")
    assert callbacks == []
    assert JobLog.objects.count() == 0
    assert queued_in_redis("echo") == 0


def test_submit__redis_down_keeps_the_job_pending(settings, transactional_db, django_capture_on_commit_callbacks):
    from tests.conftest import free_port

    settings.JOBS = {**settings.JOBS, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("echo", {})
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING  # accepted, and left for the reconciler to push


def test_retry_job__same_id_fresh_budget(redis_url, drain, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("permanent", {})
    drain(lambda: finished(job))
    with pytest.raises(JobNotRetryable):
        retry_job(submit("echo", {}))  # pending: not retryable
    with django_capture_on_commit_callbacks(execute=True):
        retried = retry_job(fresh(job))
    assert retried.pk == job.pk and fresh(job).status == JobStatus.QUEUED
    assert (retried.error_type, retried.attempts - retried.attempts_before_retry, retried.max_attempts) == ("", 0, 5)
    drain(lambda: finished(job))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.attempts == 2  # attempts keep counting
    assert [k for k, _ in events(job)].count(EventKind.RETRIED) == 1


def test_retry_job__after_a_cancel_the_new_attempt_is_not_canceled(workers, redis_conn):
    workers.start()
    with transaction.atomic():
        job = submit("cooperative", {"steps": 40})
    wait_for(lambda: recorded(redis_conn, f"started:{job.id}"), what="the job to start")
    cancel_job(fresh(job))
    wait_for(lambda: fresh(job).status == JobStatus.CANCELED, what="the cancel")
    with transaction.atomic():
        retry_job(fresh(job))
    wait_for(lambda: fresh(job).is_finished, timeout=30, what="the retried job")
    job.refresh_from_db()
    assert (job.status, job.result, job.attempts) == (JobStatus.SUCCEEDED, {"steps": 40}, 2)
