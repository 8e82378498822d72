"""Retention: finished jobs older than their type's retention are deleted, in small batches; so are uploads older
than ``JOBS["DEFAULT_RETENTION_DAYS"]`` (their files go with their rows: jobs.uploads)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from . import registry
from .conf import jobs_settings
from .models import TERMINAL_STATUSES, JobEvent, JobLog, JobLogQuerySet, Upload


@dataclass
class CleanupReport:
    jobs_deleted: int = 0
    events_deleted: int = 0
    uploads_deleted: int = 0


def cleanup_finished_jobs(*, now: datetime | None = None, batch_size: int = 1000) -> CleanupReport:
    """Delete finished JobLog rows (and their events) past retention; rq's results expire on their own TTL.

    Short transactions of ``batch_size`` rows keep locks brief on a busy table.
    """
    now = now or timezone.now()
    report = CleanupReport()
    for type_name, cutoff in cutoffs(now):
        while True:
            ids = select_expired(type_name, cutoff, batch_size)
            if not ids:
                break
            jobs, events = delete_expired(ids, cutoff)
            report.jobs_deleted += jobs
            report.events_deleted += events
            if len(ids) < batch_size:
                break
    report.uploads_deleted = cleanup_old_uploads(now=now, batch_size=batch_size)
    return report


def cleanup_old_uploads(*, now: datetime, batch_size: int = 1000) -> int:
    """Delete uploads older than ``DEFAULT_RETENTION_DAYS``, whatever jobs named them; returns how many.

    Counted from the upload, not from a job's end: an upload outlives no retention period by being named again.
    """
    cutoff = now - timedelta(days=jobs_settings().DEFAULT_RETENTION_DAYS)
    deleted = 0
    while True:
        ids = list(
            Upload.objects.filter(created_at__lt=cutoff)
            .order_by("created_at")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            break
        # QuerySet.delete() sends post_delete per row: the receiver deletes each file after the commit.
        _total, per_model = Upload.objects.filter(pk__in=ids).delete()
        deleted += per_model.get(Upload._meta.label, 0)
        if len(ids) < batch_size:
            break
    return deleted


def cutoffs(now: datetime) -> list[tuple[str, datetime]]:
    """Per job type present in the table: rows of that type finished before this moment are past retention."""
    default = timedelta(days=jobs_settings().DEFAULT_RETENTION_DAYS)
    retention = {t.name: t.retention for t in registry.all_types()}
    names = JobLog.objects.values_list("job_type", flat=True).distinct().order_by()
    return [(name, now - retention.get(name, default)) for name in names]


def select_expired(type_name: str, cutoff: datetime, batch_size: int) -> list[UUID]:
    """The oldest ``batch_size`` ids of ``type_name`` past retention: candidates, checked again by the delete."""
    return list(
        _expired(cutoff).filter(job_type=type_name).order_by("finished_at").values_list("pk", flat=True)[:batch_size]
    )


def delete_expired(ids: list[UUID], cutoff: datetime) -> tuple[int, int]:
    """Delete those of ``ids`` still finished before ``cutoff``; returns (jobs, events) deleted.

    A job retried since it was selected is running or waiting again and must survive with its timeline, so the
    condition is checked again under a row lock: a retry committed first makes the row no longer match; a retry
    coming after waits for this commit and then finds no row. QuerySet.delete() keeps the pre/post_delete
    signals (a project may delete a job's files on them) and deletes the events of the deleted rows only.
    """
    with transaction.atomic():
        doomed = list(_expired(cutoff).select_for_update().filter(pk__in=ids).values_list("pk", flat=True))
        if not doomed:
            return 0, 0
        _total, per_model = JobLog.objects.filter(pk__in=doomed).delete()
    return per_model.get(JobLog._meta.label, 0), per_model.get(JobEvent._meta.label, 0)


def _expired(cutoff: datetime) -> JobLogQuerySet:
    return JobLog.objects.filter(status__in=TERMINAL_STATUSES, finished_at__lt=cutoff)
