"""Nothing accepted is lost: the reconciler repairs Redis outages, wiped data and killed workers."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from redis import Redis

from jobs import submit
from jobs.models import EventKind, JobLog, JobStatus
from jobs.reconciler import reconcile
from tests.conftest import WorkerProcesses, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def fresh(job: JobLog) -> JobLog:
    return JobLog.objects.get(pk=job.pk)


def run_workers_until(own_redis: Any, until: Callable[[], Any], what: str, worker_args: tuple[str, ...] = ()) -> None:
    """Start one worker process on ``own_redis``, wait until ``until()`` holds, stop it."""
    pool = WorkerProcesses(own_redis.url)
    try:
        pool.start(*worker_args)
        wait_for(until, what=what)
    finally:
        pool.stop_all()


def labels_run(conn: Redis) -> list[str]:
    return [v.decode() for v in conn.lrange("test:order", 0, -1)]


def test_reconcile__jobs_submitted_while_redis_is_down_run_once_it_is_back(own_redis):
    own_redis.stop()
    jobs = []
    for i in range(5):
        with transaction.atomic():
            jobs.append(submit("ordered", {"label": f"job{i}"}))
    assert {fresh(j).status for j in jobs} == {JobStatus.PENDING}  # accepted, not lost

    own_redis.start()
    report = reconcile(grace=0)
    assert sorted(report.pushed_pending) == sorted(str(j.id) for j in jobs)
    assert {fresh(j).status for j in jobs} == {JobStatus.QUEUED}

    run_workers_until(
        own_redis, lambda: all(fresh(j).status == JobStatus.SUCCEEDED for j in jobs), what="the recovered jobs"
    )
    assert sorted(labels_run(Redis.from_url(own_redis.url))) == [f"job{i}" for i in range(5)]  # each exactly once
    assert reconcile(grace=0).total == 0  # nothing left to repair


def test_reconcile__redis_wiped_while_queued_restores_every_job_once(own_redis):
    with transaction.atomic():
        jobs = [submit("ordered", {"label": f"job{i}"}) for i in range(6)]
        delayed = submit("ordered", {"label": "later"}, delay=1)
    assert {fresh(j).status for j in jobs} == {JobStatus.QUEUED}
    Redis.from_url(own_redis.url).flushall()

    report = reconcile(grace=0)
    assert len(report.repushed_missing) == 7

    run_workers_until(
        own_redis, lambda: all(fresh(j).status == JobStatus.SUCCEEDED for j in [*jobs, delayed]), what="the jobs"
    )
    assert sorted(labels_run(Redis.from_url(own_redis.url))) == sorted([f"job{i}" for i in range(6)] + ["later"])


def test_reconcile__killed_worker_job_is_retried_by_another_and_succeeds(own_redis):
    pool = WorkerProcesses(own_redis.url)
    try:
        victim = pool.start()
        with transaction.atomic():
            job = submit("crashy", {})
        wait_for(lambda: fresh(job).status == JobStatus.RUNNING, what="the job to start")
        os.killpg(victim.pid, signal.SIGKILL)  # kill -9: no chance to record anything
        victim.wait(10)
        assert fresh(job).status == JobStatus.RUNNING  # nobody knows yet

        time.sleep(1.6)  # the liveness key (3 x 0.5 s beats in the test settings) lapses
        report = reconcile(grace=0, confirm_after=0.6)
        assert report.recovered_running == [str(job.id)]
        assert fresh(job).status in (JobStatus.QUEUED, JobStatus.SCHEDULED)

        pool.start()
        wait_for(lambda: fresh(job).status == JobStatus.SUCCEEDED, what="the retried job")
    finally:
        pool.stop_all()
    job.refresh_from_db()
    assert (job.result, job.attempts) == ("survived on attempt 2", 2)
    assert job.events.get(kind=EventKind.RETRY_SCHEDULED).data["error_type"] == "WorkerLost"


def test_reconcile__live_jobs_are_left_alone(own_redis):
    pool = WorkerProcesses(own_redis.url)
    try:
        pool.start()
        with transaction.atomic():
            job = submit("cooperative", {"steps": 60})
        wait_for(lambda: fresh(job).status == JobStatus.RUNNING, what="the job to start")
        time.sleep(0.5)
        report = reconcile(grace=0, confirm_after=0.6)
        assert report.total == 0 and fresh(job).status == JobStatus.RUNNING
        wait_for(lambda: fresh(job).status == JobStatus.SUCCEEDED, what="the job to finish")
    finally:
        pool.stop_all()
    assert fresh(job).attempts == 1


def test_jobs_reconcile_command__reports_and_refuses_bad_options(own_redis, capsys):
    from jobs.services import pause_queue

    pause_queue("echo")
    own_redis.stop()
    with transaction.atomic():
        submit("echo", {})
    own_redis.start()  # its data gone: the pause lives on in SQL only
    call_command("jobs_reconcile", "--grace", "0")
    out = capsys.readouterr().out
    assert "pending pushed: 1" in out and "pauses restored: 1" in out
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--grace must be 0 or more"):
        call_command("jobs_reconcile", "--grace", "-1")


def test_worker__survives_a_redis_restart_and_registers_again(own_redis):
    from jobs.monitoring import get_health

    pool = WorkerProcesses(own_redis.url)
    try:
        worker = pool.start()
        wait_for(lambda: get_health()["workers"] == 1, what="the worker to register")
        own_redis.stop()  # Redis goes away (and, without persistence, comes back empty)
        time.sleep(3)
        own_redis.start()
        # The worker reconnects by itself and registers again within its 10 s check.
        wait_for(lambda: get_health()["workers"] == 1, timeout=30, what="the worker to register again")
        with transaction.atomic():
            job = submit("echo", {})
        wait_for(lambda: fresh(job).status == JobStatus.SUCCEEDED, what="a job after the restart")
        assert worker.poll() is None
    finally:
        pool.stop_all()


def test_reconcile__overdue_scheduled_job_is_released(own_redis):
    # Scheduled with no worker (so no rq scheduler) to move it when due: as if the lock holder had died.
    with transaction.atomic():
        job = submit("echo", {}, delay=1)
    time.sleep(1.5)
    assert fresh(job).status == JobStatus.SCHEDULED
    report = reconcile(grace=0)
    assert report.released_overdue == [str(job.id)] and fresh(job).status == JobStatus.QUEUED
    run_workers_until(
        own_redis,
        lambda: fresh(job).status == JobStatus.SUCCEEDED,
        what="the released job",
        worker_args=("--without-scheduler",),
    )


def test_reconcile__pushes_every_pending_row_in_one_pass(own_redis):
    from jobs.reconciler import BATCH

    JobLog.objects.bulk_create(JobLog(job_type="echo", queue="echo", payload={"n": i}) for i in range(BATCH + 100))
    report = reconcile(grace=0)
    assert len(report.pushed_pending) == BATCH + 100
    assert not JobLog.objects.filter(status=JobStatus.PENDING).exists()


def test_reconcile__redis_down_ends_the_pass_and_changes_nothing(own_redis):
    from redis.exceptions import ConnectionError as RedisConnectionError

    with transaction.atomic():
        job = submit("echo", {})
    JobLog.objects.filter(pk=job.pk).update(status=JobStatus.PENDING)
    own_redis.stop()
    with pytest.raises(RedisConnectionError):
        reconcile(grace=0)
    assert fresh(job).status == JobStatus.PENDING


def test_reconcile__job_rq_gave_up_on_while_sql_says_queued_is_pushed_again(own_redis):
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from jobs.transport.connections import get_connection

    with transaction.atomic():
        job = submit("ordered", {"label": "abandoned"})
    # What rq's StartedJobRegistry cleanup leaves when a worker dies between dequeue and the runner's start.
    rq_job = Job.fetch(str(job.id), connection=get_connection(), serializer=JSONSerializer)
    get_connection().lrem(f"rq:queue:{rq_job.origin}", 0, str(job.id))
    rq_job.set_status("failed")
    assert fresh(job).status == JobStatus.QUEUED

    report = reconcile(grace=0)
    assert report.repushed_missing == [str(job.id)]
    run_workers_until(own_redis, lambda: fresh(job).status == JobStatus.SUCCEEDED, what="the re-pushed job")
    assert labels_run(Redis.from_url(own_redis.url)) == ["abandoned"]


def test_reconcile__job_popped_by_a_worker_that_died_before_starting_it_is_pushed_again(own_redis):
    from jobs.transport.connections import get_connection
    from jobs.transport.queues import rq_queue_name

    with transaction.atomic():
        dropped = submit("ordered", {"label": "dropped"})
    time.sleep(1.1)
    with transaction.atomic():
        waiting = submit("ordered", {"label": "waiting"})
    # A worker took the first id off the list (LPOP) and was killed before rq marked the job started.
    assert get_connection().lpop(f"rq:queue:{rq_queue_name('ordered', 'normal')}") == str(dropped.id).encode()

    report = reconcile(grace=0)
    assert report.repushed_missing == [str(dropped.id)]  # the one still in the list is left alone
    run_workers_until(
        own_redis, lambda: {fresh(dropped).status, fresh(waiting).status} == {JobStatus.SUCCEEDED}, what="both jobs"
    )
    assert sorted(labels_run(Redis.from_url(own_redis.url))) == ["dropped", "waiting"]


def test_reconcile__job_claimed_by_a_worker_that_died_before_starting_it_is_pushed_again(own_redis):
    from jobs.transport.queues import claim, rq_queue_name, which_alive

    with transaction.atomic():
        claimed = submit("ordered", {"label": "claimed"})
    time.sleep(1.1)
    # A worker claimed it (rq: started, liveness key set) and was killed before its SQL start.
    claims = claim([rq_queue_name("ordered", "normal")], 1, worker_name="gone", alive_seconds=0.3)
    assert [taken.job_id for taken in claims] == [str(claimed.id)]
    report = reconcile(grace=0)
    assert report.repushed_missing == []  # its liveness key is still there: the worker may be about to start it
    wait_for(lambda: not which_alive([str(claimed.id)]), what="the liveness key to lapse")

    report = reconcile(grace=0)
    assert report.repushed_missing == [str(claimed.id)]
    run_workers_until(
        own_redis,
        lambda: fresh(claimed).status == JobStatus.SUCCEEDED,
        what="the claimed job",
        worker_args=("--concurrency", "2"),
    )
    assert labels_run(Redis.from_url(own_redis.url)) == ["claimed"]
    assert fresh(claimed).attempts == 1


def test_reconcile__a_row_changed_within_the_grace_is_left_alone(own_redis):
    from datetime import timedelta

    from django.utils import timezone

    with transaction.atomic():
        job = submit("echo", {})
    JobLog.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    # A status change through update() (as retry_job makes) counts as a change: updated_at moves with it.
    JobLog.objects.filter(pk=job.pk).update(status=JobStatus.PENDING)
    assert timezone.now() - fresh(job).updated_at < timedelta(seconds=5)
    assert reconcile(grace=60).pushed_pending == []
    assert reconcile(grace=0).pushed_pending == [str(job.id)]


def test_reconcile__a_lost_job_older_than_500_running_ones_is_recovered(own_redis):
    from datetime import timedelta

    from django.utils import timezone

    from jobs.transport.queues import alive_key

    now = timezone.now()
    rows = [
        JobLog(job_type="echo", queue="echo", status=JobStatus.RUNNING, attempts=1, started_at=now - timedelta(hours=1))
        for _ in range(520)
    ]
    JobLog.objects.bulk_create(rows)
    for age, row in enumerate(rows):  # distinct creation times: the lost one is the oldest of all
        JobLog.objects.filter(pk=row.pk).update(created_at=now - timedelta(minutes=age))
    lost, live = rows[-1], rows[:-1]
    conn = Redis.from_url(own_redis.url)
    with conn.pipeline() as pipe:
        for row in live:
            pipe.set(alive_key(str(row.id)), 1, ex=60)
        pipe.execute()

    report = reconcile(grace=0, confirm_after=0)

    assert report.recovered_running == [str(lost.id)]
    assert fresh(lost).status in (JobStatus.QUEUED, JobStatus.SCHEDULED)
    assert JobLog.objects.filter(status=JobStatus.RUNNING).count() == 519


def test_reconcile__a_paused_queue_stays_paused_after_redis_is_wiped(own_redis):
    from jobs.services import pause_queue, resume_queue
    from jobs.transport.queues import paused_queues

    pause_queue("echo")
    with transaction.atomic():
        held = submit("echo", {"n": 1})
    Redis.from_url(own_redis.url).flushall()
    assert paused_queues() == set()

    report = reconcile(grace=0)
    assert report.pauses_restored == ["echo paused"] and report.repushed_missing == [str(held.id)]
    assert paused_queues() == {"echo"}

    pool = WorkerProcesses(own_redis.url)
    try:
        pool.start("--types", "echo", "greet")
        with transaction.atomic():
            other = submit("greet", {"name": "Ada"})
        wait_for(lambda: fresh(other).status == JobStatus.SUCCEEDED, what="the unpaused queue's job")
        time.sleep(1.5)  # more than the worker's look-again interval
        assert fresh(held).status == JobStatus.QUEUED

        resume_queue("echo")
        wait_for(lambda: fresh(held).status == JobStatus.SUCCEEDED, what="the resumed queue's job")
    finally:
        pool.stop_all()
    assert reconcile(grace=0).pauses_restored == []  # SQL and Redis agree: nothing to copy
