"""A cancel of a running job is never lost: recorded in SQL first, its Redis mark sent again until the job ends."""

from __future__ import annotations

import pytest
from redis import Redis

from jobs import services, submit
from jobs.models import EventKind, JobEvent, JobLog, JobStatus
from jobs.reconciler import reconcile
from jobs.transport.queues import alive_key, cancel_mark_key
from tests.conftest import WorkerProcesses, wait_for
from tests.factories import make_job, make_user
from tests.integration.api_support import job_url, token_client

pytestmark = pytest.mark.django_db(transaction=True)


def fresh(job: JobLog) -> JobLog:
    return JobLog.objects.get(pk=job.pk)


def test_cancel__a_repeat_sends_the_mark_again_without_a_second_event(redis_conn):
    job = make_job(job_type="cooperative", queue="cooperative", status=JobStatus.RUNNING, attempts=1)
    services.cancel_job(job)
    assert redis_conn.exists(cancel_mark_key(str(job.pk)))
    asked_at = fresh(job).cancel_requested_at
    redis_conn.delete(cancel_mark_key(str(job.pk)))  # lost: Redis restarted empty, or was away when asked

    again = services.cancel_job(job)

    assert again.status == JobStatus.RUNNING and again.cancel_requested_at == asked_at
    assert redis_conn.exists(cancel_mark_key(str(job.pk)))
    assert JobEvent.objects.filter(job=job, kind=EventKind.CANCEL_REQUESTED).count() == 1


def test_reconcile__resends_the_marks_of_running_jobs_asked_to_cancel(redis_conn):
    asked = make_job(job_type="cooperative", queue="cooperative", status=JobStatus.RUNNING, attempts=1)
    services.cancel_job(asked)
    unasked = make_job(job_type="cooperative", queue="cooperative", status=JobStatus.RUNNING, attempts=1)
    for job in (asked, unasked):
        redis_conn.set(alive_key(str(job.pk)), 1, px=60_000)  # alive: not the reconciler's lost attempts
    redis_conn.delete(cancel_mark_key(str(asked.pk)))

    report = reconcile(grace=0, confirm_after=0)

    assert report.resent_cancels == 1
    assert redis_conn.exists(cancel_mark_key(str(asked.pk))) and not redis_conn.exists(cancel_mark_key(str(unasked.pk)))


@pytest.mark.slow
def test_cancel__during_a_redis_outage_is_202_and_the_job_stops_once_redis_is_back(own_redis, settings):
    settings.JOBS = {**settings.JOBS, "SUBMIT_RATE": None}
    owner = make_user("canceler")
    pool = WorkerProcesses(own_redis.url)
    try:
        pool.start()
        job = submit("cooperative", {"steps": 1000}, user=owner)  # 50 s of work, unless stopped
        wait_for(lambda: fresh(job).status == JobStatus.RUNNING, what=f"the job to start {pool.output()}")
        own_redis.stop()

        response = token_client(owner).post(job_url(job, "cancel"))
        again = token_client(owner).post(job_url(job, "cancel"))

        assert (response.status_code, response.json()["status"]) == (202, "running")
        assert again.status_code == 202
        assert fresh(job).cancel_requested_at is not None
        own_redis.start()  # empty: no mark survives, and none was ever set
        conn = Redis.from_url(own_redis.url)
        # The worker beats again: the job is alive to the reconciler, which must not take it for lost.
        wait_for(lambda: conn.exists(alive_key(str(job.pk))), what=f"the job's liveness key {pool.output()}")

        # The reconciler sends the mark again (test_reconcile__resends_the_marks_of_running_jobs_asked_to_cancel
        # pins that step on its own); the worker, alive, is never taken for lost.
        report = reconcile()

        assert report.recovered_running == []
        assert report.resent_cancels == 1 or fresh(job).status == JobStatus.CANCELED
        wait_for(lambda: fresh(job).status == JobStatus.CANCELED, what=f"the job to be canceled {pool.output()}")
    finally:
        pool.stop_all()
    assert conn.lrange(f"test:stopped:{job.pk}", 0, -1)  # it stopped itself, cooperatively
    assert JobEvent.objects.filter(job=job, kind=EventKind.CANCEL_REQUESTED).count() == 1
