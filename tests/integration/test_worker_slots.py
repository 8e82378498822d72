"""A worker process's slots (jobs_worker --concurrency N): many jobs at once in one process, same guarantees."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db import transaction

from jobs import submit, submit_many
from jobs.models import EventKind, JobLog, JobStatus
from jobs.reconciler import reconcile
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def fresh(job: JobLog) -> JobLog:
    return JobLog.objects.get(pk=job.pk)


def most_at_once(jobs: list[JobLog]) -> int:
    """The largest number of these jobs that were running at the same moment (from their SQL timestamps)."""
    rows = [fresh(job) for job in jobs]
    edges = sorted([(row.started_at, 1) for row in rows] + [(row.finished_at, -1) for row in rows])
    running = best = 0
    for _at, step in edges:
        running += step
        best = max(best, running)
    return best


def test_slots__runs_jobs_at_the_same_time_in_one_process(workers):
    proc = workers.start("--concurrency", "6", "--queues", "cooperative")
    jobs = [submit("cooperative", {"steps": 20}) for _ in range(6)]  # about 1 s each
    wait_for(lambda: all(fresh(job).is_finished for job in jobs), timeout=30, what="all jobs")
    assert {fresh(job).status for job in jobs} == {JobStatus.SUCCEEDED}, workers.output()
    assert most_at_once(jobs) >= 4
    assert {fresh(job).worker_name for job in jobs} == {fresh(jobs[0]).worker_name}  # one worker did them all
    assert proc.poll() is None


def test_slots__many_short_jobs_with_database_writes_all_succeed_once(workers):
    workers.start("--concurrency", "8", "--queues", "echo")
    jobs = submit_many("echo", [{"n": i} for i in range(80)])
    wait_for(lambda: JobLog.objects.filter(status=JobStatus.SUCCEEDED).count() == 80, timeout=60, what="80 jobs")
    rows = JobLog.objects.filter(pk__in=[job.pk for job in jobs])
    assert {row.attempts for row in rows} == {1}
    assert sorted(row.result["echo"]["n"] for row in rows) == list(range(80))
    assert {row.progress_percent for row in rows} == {100}


def test_slots__async_handlers_share_one_event_loop_beyond_the_thread_count(workers):
    # Eight awaiting handlers at once, all on the one event loop thread: an async job holds no pool thread.
    workers.start("--concurrency", "8", "--queues", "async-nap")
    jobs = submit_many("async-nap", [{"seconds": 1.5}] * 8)
    wait_for(lambda: all(fresh(job).is_finished for job in jobs), timeout=30, what="all async jobs")
    rows = [fresh(job) for job in jobs]
    assert {row.status for row in rows} == {JobStatus.SUCCEEDED}, workers.output()
    assert {row.result["thread"] for row in rows} == {"jobs-loop"}
    assert most_at_once(jobs) >= 6


def test_slots__async_handler_past_its_timeout_is_cancelled(workers):
    proc = workers.start("--concurrency", "4", "--queues", "async-nap")
    job = submit("async-nap", {"seconds": 30})  # timeout 2 s
    wait_for(lambda: fresh(job).is_finished, timeout=20, what="the async job to time out")
    job.refresh_from_db()
    assert (job.status, job.error_type, job.attempts) == (JobStatus.FAILED, "JobTimeout", 1), workers.output()
    after = submit("async-nap", {"seconds": 0})
    wait_for(lambda: fresh(after).status == JobStatus.SUCCEEDED, what="the next async job")
    assert proc.poll() is None


def test_slots__timeout_interrupts_a_job_in_its_thread(workers, redis_conn):
    proc = workers.start("--concurrency", "4")
    job = submit("spinner", {"seconds": 30})
    wait_for(lambda: fresh(job).is_finished, timeout=20, what="the spinner to time out twice")
    job.refresh_from_db()
    assert (job.status, job.error_type, job.attempts) == (JobStatus.FAILED, "JobTimeout", 2), workers.output()
    assert job.events.filter(kind=EventKind.RETRY_SCHEDULED, data__error_type="JobTimeout").count() == 1
    after = submit("echo", {})
    wait_for(lambda: fresh(after).status == JobStatus.SUCCEEDED, what="the next job")
    assert proc.poll() is None


def test_slots__jobs_held_ready_never_run_beyond_the_concurrency(workers, redis_conn):
    # Sync handlers are also bounded by the thread count; async ones only by the worker's own count.
    jobs = submit_many("span", [{"seconds": 0.1}] * 6) + submit_many("async-span", [{"seconds": 0.1}] * 6)
    workers.start("--concurrency", "2", "--queues", "span", "async-span")
    wait_for(lambda: all(fresh(job).is_finished for job in jobs), timeout=30, what="all jobs")
    assert {fresh(job).status for job in jobs} == {JobStatus.SUCCEEDED}, workers.output()
    edges = sorted(
        (float(at), int(step)) for at, step in (v.decode().split() for v in redis_conn.lrange("test:spans", 0, -1))
    )
    running = [sum(step for _at, step in edges[: i + 1]) for i in range(len(edges))]
    assert len(edges) == 24
    assert max(running) == 2  # both slots used, never a third handler, though a job is held ready behind them


def test_slots__stop_hands_a_job_held_ready_back_unrun(workers, redis_conn):
    # Two slots: the first claim takes all three jobs, runs two and holds the third ready (already running in SQL).
    with transaction.atomic():
        first = [submit("cooperative", {"steps": 40}) for _ in range(2)]  # about 2 s each
        held = submit("cooperative", {"steps": 1})
    proc = workers.start("--concurrency", "2", "--queues", "cooperative")
    wait_for(
        lambda: all(redis_conn.llen(f"test:started:{job.pk}") == 1 for job in first), what="the first two handlers"
    )
    assert fresh(held).status == JobStatus.RUNNING, workers.output()

    proc.send_signal(signal.SIGTERM)  # warm shutdown: the running jobs finish, the held one goes back
    proc.wait(30)
    assert {fresh(job).status for job in first} == {JobStatus.SUCCEEDED}, workers.output()
    back = fresh(held)
    assert (back.status, back.attempts, back.started_at) == (JobStatus.QUEUED, 0, None)
    assert back.events.filter(kind=EventKind.INTERRUPTED).count() == 1
    assert redis_conn.llen(f"test:started:{held.pk}") == 0  # its handler never ran

    workers.start("--concurrency", "2", "--queues", "cooperative")
    wait_for(lambda: fresh(held).status == JobStatus.SUCCEEDED, what="the held job, run by the next worker")
    assert fresh(held).attempts == 1


def test_slots__killed_worker_loses_no_job(workers):
    victim = workers.start("--concurrency", "4", "--queues", "cooperative")
    with transaction.atomic():
        jobs = [submit("cooperative", {"steps": 400}) for _ in range(3)]  # 20 s each: still running when killed
    wait_for(lambda: all(fresh(job).status == JobStatus.RUNNING for job in jobs), what="three jobs running")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    time.sleep(1.6)  # the liveness keys (3 x 0.5 s beats in the test settings) lapse
    report = reconcile(grace=0, confirm_after=0.6)
    assert sorted(report.recovered_running) == sorted(str(job.id) for job in jobs)

    for job in jobs:  # shorter now, so the retries finish soon
        JobLog.objects.filter(pk=job.pk).update(payload={"steps": 10})
    workers.start("--concurrency", "4", "--queues", "cooperative")

    def all_succeeded() -> bool:
        # The retries wait out their backoff in rq's scheduled registry, whose scheduler lock the killed worker
        # held; the reconciler (every 15 s under jobs_scheduler) releases overdue ones, as it does here.
        reconcile(grace=0.5)
        return all(fresh(job).status == JobStatus.SUCCEEDED for job in jobs)

    wait_for(all_succeeded, timeout=40, interval=0.5, what="the retries")
    assert {fresh(job).attempts for job in jobs} == {2}
    assert all(fresh(job).events.get(kind=EventKind.RETRY_SCHEDULED).data["error_type"] == "WorkerLost" for job in jobs)
