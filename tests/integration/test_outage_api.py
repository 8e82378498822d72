"""Redis stops while users submit through the API: every submission is accepted, kept, and run exactly once."""

from __future__ import annotations

import time

import pytest
from redis import Redis

from jobs.models import JobLog, JobStatus
from jobs.scheduler import run_scheduler
from tests.conftest import WorkerProcesses, wait_for
from tests.factories import make_user
from tests.integration.api_support import JOBS_URL, token_client

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_api_submissions_during_a_redis_outage_run_exactly_once_after_it(own_redis, settings):
    settings.JOBS = {**settings.JOBS, "RECONCILE_GRACE": 0.5, "SUBMIT_RATE": None}
    client = token_client(make_user("outage"))
    pool = WorkerProcesses(own_redis.url)
    try:
        pool.start()
        before = [
            client.post(JOBS_URL, {"type": "ordered", "payload": {"label": f"before{i}"}}, format="json")
            for i in range(3)
        ]
        own_redis.stop()
        during = [
            client.post(JOBS_URL, {"type": "ordered", "payload": {"label": f"during{i}"}}, format="json")
            for i in range(10)
        ]
        # Accepted, not an error: the rows wait in SQL as pending.
        assert {r.status_code for r in before + during} == {202}
        assert {r.json()["status"] for r in during} == {"pending"}
        assert JobLog.objects.filter(status=JobStatus.PENDING).count() == 10

        time.sleep(1)
        own_redis.start()  # empty: Redis keeps nothing across the restart
        # The scheduler's reconciler pass pushes the pending rows (and re-pushes anything Redis lost).
        import threading

        stop = threading.Event()
        run_scheduler(stop, once=True)
        wait_for(
            lambda: JobLog.objects.filter(status=JobStatus.SUCCEEDED).count() == 13,
            timeout=60,
            what=f"all 13 jobs to succeed {pool.output()}",
        )
    finally:
        pool.stop_all()
    labels = sorted(v.decode() for v in Redis.from_url(own_redis.url).lrange("test:order", 0, -1))
    # Each job ran exactly once; "before" jobs that ran before the outage left their mark in the old Redis.
    during_runs = [label for label in labels if label.startswith("during")]
    assert during_runs == [f"during{i}" for i in range(10)]
    assert {j.attempts for j in JobLog.objects.all()} == {1}


def test_api__a_redis_that_stops_answering_fails_calls_within_the_timeout_instead_of_hanging(own_redis, settings):
    import os
    import signal
    import threading

    from django.db import connection

    settings.JOBS = {**settings.JOBS, "REDIS_SOCKET_TIMEOUT": 1, "REDIS_CONNECT_TIMEOUT": 1, "SUBMIT_RATE": None}
    client = token_client(make_user("root", is_staff=True, is_superuser=True))
    assert client.get("/api/health/").json()["redis"] is True  # the client now holds an open socket to Redis
    answers: dict[str, object] = {}

    def call() -> None:
        try:
            started = time.monotonic()
            answers["health"] = client.get("/api/health/")
            answers["submit"] = client.post(JOBS_URL, {"type": "echo", "payload": {}}, format="json")
            answers["seconds"] = time.monotonic() - started
        finally:
            connection.close()

    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)  # the server is there, its sockets open, and it never answers
    thread = threading.Thread(target=call, daemon=True)
    try:
        thread.start()
        thread.join(timeout=10)
        hung = thread.is_alive()
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        thread.join(30)
    assert not hung, "the requests hung on a Redis that does not answer"
    health, submitted = answers["health"], answers["submit"]
    assert health.status_code == 503 and health.json()["redis"] is False  # type: ignore[attr-defined]
    # Accepted all the same: the row waits in SQL as pending, and the reconciler pushes it later.
    assert submitted.status_code == 202 and submitted.json()["status"] == "pending"  # type: ignore[attr-defined]
    assert answers["seconds"] < 6  # type: ignore[operator]
