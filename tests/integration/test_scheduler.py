"""The scheduler turns JobSchedule rows into jobs: each tick once, overlap policy, several schedulers at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import JobLog, JobSchedule, JobStatus
from jobs.scheduler import run_schedule_now, tick
from tests.conftest import ROOT, wait_for
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def make_schedule(**overrides) -> JobSchedule:
    fields = {
        "name": "every-second",
        "job_type": "echo",
        "payload": {"from": "schedule"},
        "kind": "interval",
        "interval_seconds": 1,
        **overrides,
    }
    return JobSchedule.objects.create(**fields)


def test_tick__new_schedule_gets_a_next_run_then_runs_once_due(redis_url):
    schedule = make_schedule(interval_seconds=60)
    assert tick() == []
    schedule.refresh_from_db()
    assert schedule.next_run_at is not None and schedule.next_run_at > timezone.now()

    due = schedule.next_run_at
    (job,) = tick(now=due)
    assert (job.job_type, job.payload, job.schedule_id, job.run_at) == ("echo", {"from": "schedule"}, schedule.pk, due)
    schedule.refresh_from_db()
    assert schedule.last_job_id == job.pk and schedule.last_run_at is not None
    assert schedule.next_run_at > schedule.last_run_at
    assert tick(now=schedule.last_run_at) == []  # the same tick never runs twice


def test_tick__catch_up_after_downtime_is_bounded(redis_url, settings):
    settings.JOBS = {**settings.JOBS, "SCHEDULE_CATCH_UP": 3}
    schedule = make_schedule(interval_seconds=60, next_run_at=timezone.now() - timedelta(minutes=30), overlap="allow")
    assert len(tick()) == 3
    schedule.refresh_from_db()
    assert schedule.next_run_at > timezone.now()


def test_tick__overlap_skip_waits_for_the_active_job(redis_url):
    schedule = make_schedule(interval_seconds=60, next_run_at=timezone.now() - timedelta(seconds=1))
    (first,) = tick()
    JobSchedule.objects.filter(pk=schedule.pk).update(next_run_at=timezone.now() - timedelta(seconds=1))
    assert tick() == []  # the first job is still queued: skipped
    JobLog.objects.filter(pk=first.pk).update(status=JobStatus.SUCCEEDED)
    JobSchedule.objects.filter(pk=schedule.pk).update(next_run_at=timezone.now() - timedelta(seconds=1))
    assert len(tick()) == 1


def test_tick__once_schedule_runs_once_and_disables(redis_url):
    schedule = make_schedule(kind="once", interval_seconds=None, run_at=timezone.now() - timedelta(seconds=1))
    assert len(tick()) == 1  # next_run_at comes from run_at, already due
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.next_run_at) == (False, None)
    assert tick() == []


def test_tick__owner_and_priority_carried(redis_url):
    owner = make_user("sched-owner")
    make_schedule(owner=owner, priority="high", next_run_at=timezone.now())
    (job,) = tick()
    assert (job.owner_id, job.priority) == (owner.pk, "high")


def test_tick__a_broken_schedule_does_not_stop_the_others(redis_url):
    make_schedule(
        name="broken", job_type="greet", payload={"name": 123456789012345678901234}, next_run_at=timezone.now()
    )
    make_schedule(name="fine", next_run_at=timezone.now())
    (job,) = tick()
    assert job.job_type == "echo"


def test_run_now__submits_and_records_last_job(redis_url):
    schedule = make_schedule(interval_seconds=3600)
    job = run_schedule_now(schedule)
    schedule.refresh_from_db()
    assert schedule.last_job_id == job.pk and job.schedule_id == schedule.pk


@pytest.mark.slow
def test_two_schedulers_side_by_side_enqueue_each_tick_once(workers):
    schedule = make_schedule(next_run_at=timezone.now() + timedelta(seconds=1), overlap="allow")
    first_tick = schedule.next_run_at
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "django", "jobs_scheduler"],
            cwd=ROOT,
            env=workers.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(2)
    ]
    try:
        # Until five ticks were claimed, however slowly a loaded machine starts the two processes.
        wait_for(
            lambda: (JobSchedule.objects.get(pk=schedule.pk).next_run_at - first_tick).total_seconds() >= 5,
            timeout=60,
            interval=0.2,
            what="five ticks",
        )
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            assert proc.wait(15) == 0  # both stop cleanly on SIGTERM
    schedule.refresh_from_db()
    ticks_claimed = round((schedule.next_run_at - first_tick).total_seconds())
    ticks = list(JobLog.objects.filter(schedule=schedule).values_list("run_at", flat=True))
    assert ticks_claimed >= 4  # several ticks really happened
    assert len(set(ticks)) == len(ticks)  # no tick enqueued twice
    assert all((t - first_tick).total_seconds() in range(ticks_claimed) for t in ticks)  # each a claimed tick
    # A scheduler running late skips ticks beyond SCHEDULE_CATCH_UP (1) by design; on a loaded machine it can
    # be late more than once in six seconds, so only "most ticks ran" is asserted, not a number per second.
    assert len(ticks) >= 2


def test_tick__a_schedule_that_never_fires_is_disabled_not_fatal(redis_url):
    broken = make_schedule(name="feb-31", kind="cron", cron="0 0 31 2 *", interval_seconds=None)
    make_schedule(name="fine", next_run_at=timezone.now())
    (job,) = tick()
    assert job.job_type == "echo"
    broken.refresh_from_db()
    assert broken.enabled is False


def test_tick__a_staff_only_schedule_of_a_non_staff_owner_is_refused_and_disabled(redis_url, caplog):
    # Saved around the API's and the admin's check (in code), or its owner lost staff status since.
    schedule = make_schedule(
        job_type="admin-only", payload={}, owner=make_user("alice"), next_run_at=timezone.now() - timedelta(seconds=1)
    )

    assert [job for job in tick() if job.schedule_id == schedule.pk] == []

    schedule.refresh_from_db()
    assert not JobLog.objects.filter(schedule=schedule).exists(), "never run as anybody else"
    assert schedule.enabled is False and schedule.next_run_at is None
    assert "Schedule every-second disabled: Only staff may submit 'admin-only' jobs." in caplog.text
    assert not JobLog.objects.filter(schedule=schedule).exists()
