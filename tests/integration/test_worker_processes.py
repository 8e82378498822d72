"""Behaviour that needs real worker processes: timeouts, limits across workers, cancellation, crashes."""

from __future__ import annotations

import os
import signal

import pytest
from django.db import transaction
from redis import Redis

from jobs import cancel_job, submit
from jobs.models import EventKind, JobLog, JobStatus
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def recorded(redis_conn: Redis, key: str) -> list[str]:
    return [v.decode() for v in redis_conn.lrange(f"test:{key}", 0, -1)]


def fresh(job: JobLog) -> JobLog:
    return JobLog.objects.get(pk=job.pk)


# Worker modes: the forking worker, the in-process one, and the thread pool (--concurrency).
MODES = {"fork": ("--worker-class", "fork"), "simple": ("--worker-class", "simple"), "thread": ("--concurrency", "4")}


def submit_committed(*args, **kwargs) -> JobLog:
    # A real transaction: the job is pushed on commit, as from a view.
    with transaction.atomic():
        return submit(*args, **kwargs)


@pytest.mark.parametrize("worker_class", ["fork", "simple"])
def test_timeout__attempts_fail_with_jobtimeout_and_worker_survives(worker_class, workers, redis_conn):
    proc = workers.start("--worker-class", worker_class)
    job = submit_committed("slow", {"seconds": 30})
    wait_for(lambda: fresh(job).is_finished, timeout=30, what="the slow job to fail")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED, workers.output()
    assert job.error_type == "JobTimeout" and "timeout of 1 s" in job.error_message
    assert job.attempts == 2 and len(recorded(redis_conn, f"attempts:{job.id}")) == 2
    assert job.events.filter(kind=EventKind.RETRY_SCHEDULED, data__error_type="JobTimeout").count() == 1

    # The same worker process goes on to the next job.
    after = submit_committed("echo", {"still": "alive"})
    wait_for(lambda: fresh(after).status == JobStatus.SUCCEEDED, what="the next job")
    assert proc.poll() is None


@pytest.mark.parametrize("worker_class", ["simple", "thread"])
def test_rate_limit__never_exceeded_and_deferred_jobs_finish(worker_class, workers, redis_conn):
    for _ in range(2):
        workers.start(*MODES[worker_class], "--types", "throttled")
    jobs = [submit_committed("throttled", {}) for _ in range(10)]
    wait_for(lambda: all(fresh(j).is_finished for j in jobs), timeout=40, what="all throttled jobs")
    assert {fresh(j).status for j in jobs} == {JobStatus.SUCCEEDED}, workers.output()
    # Deferral spends no attempt.
    assert {fresh(j).attempts for j in jobs} == {1}
    starts = sorted(float(t) for t in recorded(redis_conn, "throttled"))
    assert len(starts) == 10
    # "3/s": no window of one second holds more than three starts (less a little for the handler's own delay).
    busiest = max(sum(1 for t in starts if s <= t < s + 0.95) for s in starts)
    assert busiest <= 3
    assert starts[-1] - starts[0] >= 2.0  # ten starts at three a second need at least three windows
    assert JobLog.objects.filter(events__kind=EventKind.DEFERRED).distinct().count() >= 1


@pytest.mark.parametrize("worker_class", ["simple", "thread"])
def test_concurrency__never_exceeded_with_more_workers_than_the_limit(worker_class, workers, redis_conn):
    for _ in range(3):
        workers.start(*MODES[worker_class], "--types", "capped")
    jobs = [submit_committed("capped", {"seconds": 0.4}) for _ in range(8)]
    wait_for(lambda: all(fresh(j).is_finished for j in jobs), timeout=40, what="all capped jobs")
    assert {fresh(j).status for j in jobs} == {JobStatus.SUCCEEDED}, workers.output()
    seen = [int(v) for v in recorded(redis_conn, "capped:seen")]
    assert len(seen) == 8
    assert max(seen) == 2  # the cap was reached, and never passed


@pytest.mark.parametrize("worker_class", ["fork", "simple", "thread"])
def test_cancel__cooperative_handler_stops(worker_class, workers, redis_conn):
    workers.start(*MODES[worker_class])
    job = submit_committed("cooperative", {"steps": 400})
    wait_for(lambda: recorded(redis_conn, f"started:{job.id}"), what="the job to start")
    cancel_job(fresh(job))
    wait_for(lambda: fresh(job).is_finished, timeout=10, what="the job to stop")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED, workers.output()
    stopped_at = int(recorded(redis_conn, f"stopped:{job.id}")[0])
    assert 0 < stopped_at < 400 and job.result is None
    kinds = list(job.events.values_list("kind", flat=True))
    assert kinds[-2:] == [EventKind.CANCEL_REQUESTED, EventKind.CANCELED]


@pytest.mark.parametrize("worker_class", ["fork", "simple", "thread"])
def test_cancel__handler_ignoring_cancel_is_interrupted(worker_class, workers, redis_conn):
    proc = workers.start(*MODES[worker_class])
    job = submit_committed("stubborn", {"seconds": 30})
    wait_for(lambda: recorded(redis_conn, f"started:{job.id}"), what="the job to start")
    cancel_job(fresh(job))
    # CANCEL_GRACE is 1 s in the test settings: well before the 30 s the handler wants.
    wait_for(lambda: fresh(job).is_finished, timeout=10, what="the job to be interrupted")
    assert fresh(job).status == JobStatus.CANCELED, workers.output()
    after = submit_committed("echo", {})
    wait_for(lambda: fresh(after).status == JobStatus.SUCCEEDED, what="the next job")
    assert proc.poll() is None


def test_crash__killed_work_horse_is_retried_and_succeeds(workers, redis_conn):
    proc = workers.start("--worker-class", "fork")
    job = submit_committed("crashy", {})
    horse_pid = int(wait_for(lambda: recorded(redis_conn, f"pids:{job.id}"), what="the horse to start")[0])
    assert horse_pid != proc.pid
    os.kill(horse_pid, signal.SIGKILL)
    wait_for(lambda: fresh(job).is_finished, timeout=30, what="the retried job")
    job.refresh_from_db()
    assert (job.status, job.result, job.attempts) == (JobStatus.SUCCEEDED, "survived on attempt 2", 2), workers.output()
    lost = job.events.get(kind=EventKind.RETRY_SCHEDULED)
    assert lost.data["error_type"] == "WorkerLost" and "terminated unexpectedly" in lost.message
    assert proc.poll() is None


def test_cancel__blocked_handler_has_its_work_horse_stopped(workers, redis_conn):
    proc = workers.start("--worker-class", "fork")
    job = submit_committed("sleeper", {"seconds": 60})
    wait_for(lambda: recorded(redis_conn, f"started:{job.id}"), what="the job to start")
    cancel_job(fresh(job))
    # Two grace periods of 1 s (cooperative, then the async exception), then rq's stop-job command.
    wait_for(lambda: fresh(job).is_finished, timeout=15, what="the horse to be stopped")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED and job.attempts == 1, workers.output()
    after = submit_committed("echo", {})
    wait_for(lambda: fresh(after).status == JobStatus.SUCCEEDED, what="the next job")
    assert proc.poll() is None


@pytest.mark.parametrize("worker_class", ["fork", "simple", "thread"])
def test_sigterm__job_finishing_within_grace_completes(worker_class, workers, redis_conn, settings):
    proc = workers.start(*MODES[worker_class])
    job = submit_committed("cooperative", {"steps": 20})  # about 1 s of work
    wait_for(lambda: recorded(redis_conn, f"started:{job.id}"), what="the job to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0  # the worker exits once the job is done
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)


@pytest.mark.parametrize("worker_class", ["fork", "simple", "thread"])
def test_sigterm__job_outliving_grace_goes_back_to_queue_and_runs_later(worker_class, workers, redis_conn):
    # SHUTDOWN_GRACE is 30 s by default; the stubborn handler wants 60 s. Override for this worker only.
    workers.extra_env = {"JOBS_TEST_SHUTDOWN_GRACE": "1"}
    proc = workers.start(*MODES[worker_class])
    job = submit_committed("stubborn", {"seconds": 4})
    wait_for(lambda: recorded(redis_conn, f"started:{job.id}"), what="the job to start")
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED, workers.output()
    assert job.attempts == 0  # the interrupted attempt is not counted as a failure
    assert job.events.filter(kind=EventKind.INTERRUPTED).count() == 1
    assert not job.events.filter(kind__in=[EventKind.FAILED, EventKind.RETRY_SCHEDULED]).exists()

    workers.extra_env = {}
    workers.start(*MODES[worker_class])
    wait_for(lambda: fresh(job).status == JobStatus.SUCCEEDED, timeout=30, what="the requeued job")
    assert fresh(job).attempts == 1
