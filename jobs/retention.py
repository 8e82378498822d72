"""Retention: finished jobs older than their type's retention are deleted, in small batches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from . import registry
from .conf import jobs_settings
from .models import TERMINAL_STATUSES, JobEvent, JobLog, JobSchedule


@dataclass
class CleanupReport:
    jobs_deleted: int = 0
    events_deleted: int = 0


def cleanup_finished_jobs(*, now: datetime | None = None, batch_size: int = 1000) -> CleanupReport:
    """Delete finished JobLog rows (and their events) past retention; rq's results expire on their own TTL.

    Short transactions of ``batch_size`` rows keep locks brief on a busy table.
    """
    now = now or timezone.now()
    report = CleanupReport()
    default = timedelta(days=jobs_settings().DEFAULT_RETENTION_DAYS)
    retention = {t.name: t.retention for t in registry.all_types()}
    for type_name in JobLog.objects.values_list("job_type", flat=True).distinct().order_by():
        cutoff = now - retention.get(type_name, default)
        while True:
            ids = list(
                JobLog.objects.filter(job_type=type_name, status__in=TERMINAL_STATUSES, finished_at__lt=cutoff)
                .order_by("finished_at")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            with transaction.atomic():
                JobSchedule.objects.filter(last_job_id__in=ids).update(last_job=None)
                report.events_deleted += JobEvent.objects.filter(job_id__in=ids).delete()[0]
                report.jobs_deleted += JobLog.objects.filter(pk__in=ids).delete()[0]
            if len(ids) < batch_size:
                break
    return report
