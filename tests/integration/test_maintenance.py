"""Retention cleanup, its daily schedule, and the health command."""

from __future__ import annotations

import importlib
import io
from datetime import timedelta

import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from jobs.models import JobEvent, JobLog, JobSchedule, JobStatus
from jobs.registry import job_type, unregister
from jobs.retention import cleanup_finished_jobs
from tests.factories import make_job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def short_lived():
    job_type("short-lived", retention=3600)(lambda ctx, payload: None)
    yield
    unregister("short-lived")


def aged(days: float, **fields) -> JobLog:
    job = make_job(**fields)
    JobEvent.objects.create(job=job, kind="submitted")
    JobLog.objects.filter(pk=job.pk).update(finished_at=timezone.now() - timedelta(days=days))
    return job


def test_cleanup__deletes_finished_jobs_past_their_types_retention(short_lived):
    old_default = aged(31, status=JobStatus.SUCCEEDED)  # echo: the 30-day default
    young_default = aged(29, status=JobStatus.FAILED)
    old_short = aged(0.1, job_type="short-lived", queue="short-lived", status=JobStatus.CANCELED)  # > 1 hour
    old_but_waiting = aged(90, status=JobStatus.QUEUED)  # never deleted while not finished
    schedule = JobSchedule.objects.create(
        name="s", job_type="echo", kind="interval", interval_seconds=60, last_job=old_default
    )

    report = cleanup_finished_jobs(batch_size=1)  # tiny batches: the loop must still finish the work

    assert (report.jobs_deleted, report.events_deleted) == (2, 2)
    remaining = set(JobLog.objects.values_list("pk", flat=True))
    assert remaining == {young_default.pk, old_but_waiting.pk}
    assert not JobEvent.objects.filter(job_id__in=[old_default.pk, old_short.pk]).exists()
    schedule.refresh_from_db()
    assert schedule.last_job is None


def test_cleanup_command__reports_and_refuses_bad_batch(capsys):
    aged(40, status=JobStatus.SUCCEEDED)
    call_command("jobs_cleanup")
    assert "deleted 1 jobs and 1 events" in capsys.readouterr().out
    with pytest.raises(CommandError, match="--batch-size must be 1 or more"):
        call_command("jobs_cleanup", "--batch-size", "0")


def test_cleanup_schedule__added_by_migration_and_runs_the_cleanup_type():
    migration = importlib.import_module("jobs.migrations.0002_add_cleanup_schedule")
    migration.add_schedule(apps, None)
    migration.add_schedule(apps, None)  # idempotent
    schedule = JobSchedule.objects.get(name=migration.NAME)
    assert (schedule.job_type, schedule.kind, schedule.cron, schedule.enabled) == (
        "jobs-cleanup",
        "cron",
        "17 3 * * *",
        True,
    )
    migration.remove_schedule(apps, None)
    assert not JobSchedule.objects.filter(name=migration.NAME).exists()


def test_cleanup_job_type__runs_through_a_worker(redis_url, drain, django_capture_on_commit_callbacks):
    from jobs import submit

    aged(45, status=JobStatus.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("jobs-cleanup", {})
    drain(lambda: JobLog.objects.get(pk=job.pk).is_finished)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.result == {
        "jobs_deleted": 1,
        "events_deleted": 1,
        "uploads_deleted": 0,
    }


def test_jobs_health__exit_code_follows_health(workers, capsys):
    from tests.conftest import wait_for

    with pytest.raises(CommandError, match="degraded: no live worker"):
        call_command("jobs_health")
    workers.start()
    wait_for(lambda: _healthy(), what="a live worker")
    call_command("jobs_health")
    assert '"status": "ok"' in capsys.readouterr().out


def _healthy() -> bool:
    try:
        call_command("jobs_health", stdout=io.StringIO())
    except CommandError:
        return False
    return True


def test_cleanup__a_job_retried_after_it_was_selected_survives_with_its_events(redis_url):
    from jobs import services
    from jobs.retention import cutoffs, delete_expired, select_expired

    job = aged(40, status=JobStatus.FAILED)
    expired_too = aged(40, status=JobStatus.SUCCEEDED)
    (type_name, cutoff), *_ = [(name, cutoff) for name, cutoff in cutoffs(timezone.now()) if name == "echo"]
    ids = select_expired(type_name, cutoff, batch_size=10)
    assert set(ids) == {job.pk, expired_too.pk}

    services.retry_job(job)  # the user's 202 lands between the cleanup's select and its delete

    assert delete_expired(ids, cutoff) == (1, 1)
    assert JobLog.objects.get(pk=job.pk).status == JobStatus.QUEUED
    assert list(JobEvent.objects.filter(job=job).values_list("kind", flat=True)) == ["submitted", "retried"]
    assert not JobLog.objects.filter(pk=expired_too.pk).exists()


def test_cleanup__deletion_sends_post_delete_for_each_job(short_lived):
    from django.db.models.signals import post_delete

    deleted: list[object] = []

    def receiver(sender, instance, **kwargs):
        deleted.append(instance.pk)

    post_delete.connect(receiver, sender=JobLog)
    try:
        old = aged(0.1, job_type="short-lived", queue="short-lived", status=JobStatus.SUCCEEDED)
        cleanup_finished_jobs()
    finally:
        post_delete.disconnect(receiver, sender=JobLog)
    assert deleted == [old.pk]
