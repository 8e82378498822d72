"""Jobs handed to Redis: new rows queued, rows queued again (the reconciler, a manual retry), and the one hand-off
every one of them takes after its commit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .. import registry
from ..conf import jobs_settings
from ..exceptions import JobNotRetryable
from ..live.publish import publish_status
from ..models import EventKind, JobEvent, JobLog, JobStatus
from ..transport import queues as transport
from ..transport.connections import TransportError
from .rows import IN_CLAUSE, event

logger = logging.getLogger(__name__)


def queue_new(jobs: Sequence[JobLog], *, publish: bool = True) -> None:
    """INSERT new rows, each queued (or scheduled for a later run_at), with their "submitted" events; hand them to
    Redis once the caller's transaction commits."""
    with transaction.atomic():  # a savepoint inside the caller's transaction: a unique key clash stays contained
        JobLog.objects.bulk_create(jobs, batch_size=IN_CLAUSE)
        JobEvent.objects.bulk_create(
            (
                JobEvent(
                    job=job,
                    kind=EventKind.SUBMITTED,
                    status=job.status,
                    message=submitted_message(job),
                    data=submitted_data(job),
                )
                for job in jobs
            ),
            batch_size=IN_CLAUSE,
        )
    transaction.on_commit(partial(hand_over, list(jobs), publish=publish, raise_errors=False))


def submitted_data(job: JobLog) -> dict[str, Any]:
    data: dict[str, Any] = {"priority": job.priority, "queue": job.queue}
    if job.run_at:
        data["run_at"] = job.run_at.isoformat()
    if job.schedule_id is not None:
        # Runs are submitted as the schedule's owner: the timeline says which schedule did it, and who owned it.
        data["schedule"] = {"id": job.schedule_id, "name": job.schedule.name if job.schedule else ""}
    return data


def submitted_message(job: JobLog) -> str:
    if job.schedule_id is None or job.schedule is None:
        return ""
    return f"Submitted by schedule {job.schedule.name!r} (#{job.schedule_id})."


def waiting_status(run_at: datetime | None, now: datetime) -> JobStatus:
    """What a job handed to Redis now is: scheduled when its run_at is still ahead, else queued."""
    return JobStatus.SCHEDULED if run_at is not None and run_at > now else JobStatus.QUEUED


def repush(jobs: Sequence[JobLog], *, run_now: bool = False) -> list[JobLog]:
    """Hand waiting rows to Redis again (the reconciler's repairs): pending ones, queued ones Redis lost, and, with
    ``run_now``, scheduled ones overdue. Whatever rq still holds of them is dropped first. Returns the rows handed
    over; raises TransportError at the first push that fails (the rows not pushed stay or go back to pending)."""
    now = timezone.now()
    moved: list[JobLog] = []
    with transaction.atomic():
        for job in jobs:
            if run_now:
                job.run_at = None
            status = waiting_status(job.run_at, now)
            # Conditional on the status read: a job a worker started, or a user canceled, meanwhile is left alone.
            if JobLog.objects.filter(pk=job.pk, status=job.status).update(
                status=status, enqueued_at=now, run_at=job.run_at
            ):
                job.status, job.enqueued_at = status, now
                moved.append(job)
        transaction.on_commit(partial(hand_over, moved, replace=True, raise_errors=True))
    return moved


def retry(job: JobLog, *, by: Any = None) -> JobLog:
    """Run a failed or canceled job again under the same id, with a fresh budget of attempts; raises
    JobNotRetryable otherwise."""
    job_type = registry.get(job.job_type)
    now = timezone.now()
    with transaction.atomic():
        updated = JobLog.objects.filter(pk=job.pk, status__in=(JobStatus.FAILED, JobStatus.CANCELED)).update(
            status=JobStatus.QUEUED,
            enqueued_at=now,
            attempts_before_retry=F("attempts"),
            max_attempts=job_type.max_attempts,
            result=None,
            error_type="",
            error_message="",
            traceback="",
            cancel_requested_at=None,
            finished_at=None,
            started_at=None,
            run_at=None,
            progress_percent=0,
            progress_message="",
            progress_stage="",
            progress_data={},
            failed_items=[],
            failed_items_count=0,
        )
        job.refresh_from_db()
        if not updated:
            raise JobNotRetryable(f"Only failed or canceled jobs can be retried; this one is {job.status}.")
        event(job, EventKind.RETRIED, data={"by": by})
        transaction.on_commit(partial(hand_over, [job], replace=True, raise_errors=False))
    return job


def hand_over(jobs: list[JobLog], *, replace: bool = False, publish: bool = True, raise_errors: bool) -> None:
    """The one hand-off, run after the rows committed as queued or scheduled: push them, and on a Redis error put
    them back to pending (the reconciler pushes them later)."""
    if not jobs:
        return
    try:
        transport.push([to_handoff(job) for job in jobs], replace=replace)
    except TransportError as exc:
        logger.warning("Redis unavailable, %d job(s) stay pending: %s", len(jobs), exc)
        back_to_pending(jobs)
        if raise_errors:
            raise
        return
    if publish:
        for job in jobs:
            publish_status(job)


def to_handoff(job: JobLog) -> transport.Handoff:
    job_type = registry.find(job.job_type)  # unregistered since: its worker fails it as an unknown type
    settings = jobs_settings()
    retention = job_type.retention if job_type else timedelta(days=settings.DEFAULT_RETENTION_DAYS)
    return transport.Handoff(
        id=str(job.pk),
        type=job.job_type,
        queue=job.queue,
        priority=job.priority,
        timeout=job_type.timeout if job_type else settings.DEFAULT_TIMEOUT,
        retention=int(retention.total_seconds()),
        due=job.run_at,
        concurrency=job_type.concurrency if job_type else None,
    )


def back_to_pending(jobs: list[JobLog]) -> None:
    ids = [job.pk for job in jobs]
    for start in range(0, len(ids), IN_CLAUSE):
        JobLog.objects.filter(
            pk__in=ids[start : start + IN_CLAUSE], status__in=(JobStatus.QUEUED, JobStatus.SCHEDULED)
        ).update(status=JobStatus.PENDING, enqueued_at=None)
    for job in jobs:
        if job.status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            job.status, job.enqueued_at = JobStatus.PENDING, None
