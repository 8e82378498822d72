"""Queue control and monitoring: pause/resume honoured by real workers, stats, health, requeue-failed."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import transaction

from jobs import submit, submit_many
from jobs.exceptions import QueueNotFound
from jobs.models import JobLog, JobStatus, PausedQueue
from jobs.monitoring import get_health, list_queue_stats
from jobs.services import pause_queue, requeue_failed, resume_queue
from tests.conftest import free_port, wait_for
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def fresh(job: JobLog) -> JobLog:
    return JobLog.objects.get(pk=job.pk)


def stats_of(name: str) -> dict:
    return next(s for s in list_queue_stats() if s["name"] == name)


def test_pause__worker_leaves_paused_queue_alone_until_resumed(workers):
    proc = workers.start("--types", "echo", "greet")
    pause_queue("echo")
    with transaction.atomic():
        held = submit("echo", {"n": 1}, priority="critical")
        other = submit("greet", {"name": "Ada"})
    # The worker keeps serving the other queue while "echo" is paused.
    wait_for(lambda: fresh(other).status == JobStatus.SUCCEEDED, what="the unpaused queue's job")
    time.sleep(2)  # more than the worker's look-again interval
    assert fresh(held).status == JobStatus.QUEUED
    assert stats_of("echo")["paused"] is True and stats_of("echo")["waiting_in_redis"]["critical"] == 1

    resume_queue("echo")
    wait_for(lambda: fresh(held).status == JobStatus.SUCCEEDED, what="the resumed queue's job")
    assert stats_of("echo")["paused"] is False and proc.poll() is None


def test_pause__paused_while_worker_blocks_waiting(workers):
    # The worker is already blocked waiting on every queue when the pause lands.
    workers.start("--types", "echo")
    wait_for(lambda: any(s["workers"] for s in list_queue_stats() if s["name"] == "echo"), what="the worker")
    time.sleep(0.5)
    pause_queue("echo")
    with transaction.atomic():
        held = submit("echo", {})
    time.sleep(2.5)
    assert fresh(held).status == JobStatus.QUEUED
    resume_queue("echo")
    wait_for(lambda: fresh(held).status == JobStatus.SUCCEEDED, what="the resumed job")


def test_pause__unknown_queue_refused(redis_url):
    with pytest.raises(QueueNotFound):
        pause_queue("nope")
    with pytest.raises(QueueNotFound):
        resume_queue("nope")
    assert not PausedQueue.objects.exists()


def test_pause__kept_in_sql_with_who_paused_and_shown_paused_while_redis_is_away(redis_url, settings):
    operator = make_user("operator", is_staff=True)
    pause_queue("echo", user=operator)
    pause_queue("echo")  # twice: still one pause, still the first operator's
    assert list(PausedQueue.objects.values_list("name", "paused_by")) == [("echo", operator.pk)]
    settings.JOBS = {**settings.JOBS, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    assert stats_of("echo")["paused"] is True


def test_stats__counts_workers_and_throughput(workers):
    with transaction.atomic():
        done = [submit("echo", {"n": i}) for i in range(3)]
    workers.start("--types", "echo", "--name", "stats-worker")
    wait_for(lambda: all(fresh(j).status == JobStatus.SUCCEEDED for j in done), what="the echo jobs")
    with transaction.atomic():
        submit("echo", {"n": 9}, delay=60)
    echo = stats_of("echo")
    assert echo["job_types"] == ["echo"]
    assert echo["counts"]["succeeded"] == 3 and echo["counts"]["scheduled"] == 1
    assert echo["throughput"] == {"last_minute": 3, "last_hour": 3}
    (worker,) = echo["workers"]
    assert worker["name"].startswith("stats-worker.") and worker["pid"] > 0 and worker["host"]


def test_health__degraded_without_workers_ok_with_one(workers):
    assert get_health()["status"] == "degraded" and get_health()["workers"] == 0
    workers.start()
    health = wait_for(lambda: (h := get_health())["status"] == "ok" and h, what="a healthy report")
    assert health["database"] and health["redis"] and health["workers"] == 1


def test_health__redis_down_is_degraded(settings, transactional_db):
    from tests.conftest import free_port

    settings.JOBS = {**settings.JOBS, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    health = get_health()
    assert (health["status"], health["redis"], health["database"]) == ("degraded", False, True)


def test_requeue_failed__retries_every_failed_job_of_the_queue(redis_url, drain, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        failed = [submit("permanent", {}) for _ in range(2)]
    drain(lambda: all(fresh(j).status == JobStatus.FAILED for j in failed))
    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_failed("permanent") == 2
    assert {fresh(j).status for j in failed} == {JobStatus.QUEUED}
    assert requeue_failed("echo") == 0


def _claim_in_background(wanted: int) -> tuple[threading.Thread, list]:
    from jobs.transport.queues import claim, rq_queue_name

    result: list = []
    names = [rq_queue_name("echo", priority) for priority in ("critical", "normal")]
    thread = threading.Thread(
        target=lambda: result.extend(claim(names, wanted, worker_name="probe", alive_seconds=5, block=3))
    )
    thread.start()
    time.sleep(0.3)  # it is now waiting in BLPOP on empty lists
    return thread, result


def test_claim__a_job_popped_while_waiting_on_a_paused_queue_is_handed_back_at_the_head(redis_url, redis_conn):
    from rq import Queue

    from jobs.transport.queues import queue_head

    thread, claimed = _claim_in_background(wanted=4)
    pause_queue("echo")
    with transaction.atomic():
        held = submit("echo", {"n": 1}, priority="critical")
    thread.join(5)
    assert claimed == []
    assert queue_head("echo", "critical") == str(held.id)
    assert redis_conn.hget(f"{Queue.job_class.redis_job_namespace_prefix}{held.id}", "status") == b"queued"


def test_claim__wakes_on_the_first_job_and_takes_the_others_waiting_with_it(redis_url, redis_conn):
    from jobs.transport.queues import which_alive

    thread, claimed = _claim_in_background(wanted=4)
    pushed_at = time.time()
    with transaction.atomic():
        jobs = submit_many("echo", [{"n": n} for n in range(3)])  # one MULTI on commit: all three land at once
    thread.join(5)
    ids = {str(job.id) for job in jobs}
    taken = {claim.job_id for claim in claimed}
    assert taken == ids
    # Started from when the wait ended, not from when it began.
    assert all(claim.started_at >= pushed_at for claim in claimed)
    assert which_alive(list(ids)) == taken


def test_pause__a_waiting_worker_does_not_spin_on_a_paused_queues_jobs(workers):
    import psutil

    proc = workers.start("--types", "echo")
    pause_queue("echo")
    with transaction.atomic():
        held = [submit("echo", {"n": n}) for n in range(3)]
    wait_for(lambda: psutil.Process(proc.pid).children(), what="the worker process")
    [process] = psutil.Process(proc.pid).children()
    time.sleep(1)
    before = process.cpu_times()
    time.sleep(3)
    after = process.cpu_times()
    # Waiting, not popping the paused queue's jobs and handing them back again and again.
    assert (after.user + after.system) - (before.user + before.system) < 0.5
    assert {fresh(job).status for job in held} == {JobStatus.QUEUED}


def test_health__a_worker_killed_outright_is_dead_within_its_beat_and_removed_from_lists(workers, redis_conn):
    import os
    import signal

    from rest_framework.test import APIClient

    from jobs.reconciler import reconcile
    from jobs.transport.worker import worker_beat_ttl
    from jobs.transport.workers import workers_by_queue

    client = APIClient()
    proc = workers.start("--types", "echo")
    wait_for(lambda: client.get("/api/health/").status_code == 200, what="a healthy report")
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9 the supervisor and its processes: nobody unregisters
    proc.wait(10)
    killed_at = time.monotonic()
    assert redis_conn.scard("rq:workers") == 1  # rq still lists it

    wait_for(lambda: client.get("/api/health/").status_code == 503, timeout=worker_beat_ttl() + 3, what="503")
    assert time.monotonic() - killed_at < worker_beat_ttl() + 3
    assert get_health()["workers"] == 0 and workers_by_queue() == {} and stats_of("echo")["workers"] == []

    assert len(reconcile(grace=0).dead_workers_removed) == 1
    assert redis_conn.scard("rq:workers") == 0  # rq's own tooling no longer lists it either


def test_claim__a_blocking_wait_longer_than_the_socket_timeout_does_not_fail(own_redis, settings):
    from jobs.transport.connections import get_connection
    from jobs.transport.queues import claim, queue_names

    settings.JOBS = {**settings.JOBS, "REDIS_SOCKET_TIMEOUT": 0.3}  # a fresh server: its client is made with it
    assert get_connection().connection_pool.connection_kwargs["socket_timeout"] == 0.3
    started = time.monotonic()
    assert claim(queue_names(["echo"]), 1, worker_name="w", alive_seconds=1, block=1) == []
    assert time.monotonic() - started >= 0.9  # it really waited, past the socket timeout, and ended quietly
