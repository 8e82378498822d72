"""Cancels asked for by a user: a waiting job at once, a running one by a request its worker hears."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import registry
from ..conf import jobs_settings
from ..exceptions import JobAlreadyFinished
from ..live.publish import publish_status
from ..models import WAITING_STATUSES, EventKind, JobEvent, JobLog, JobStatus
from ..transport import queues as transport
from ..transport.connections import TransportError
from .rows import event

logger = logging.getLogger(__name__)


def cancel(job: JobLog, *, by: Any = None) -> JobLog:
    """Cancel a waiting job at once, or ask a running one to stop; raises JobAlreadyFinished. Asking twice is fine."""
    now = timezone.now()
    with transaction.atomic():
        # Conditional updates, not read-then-write: a worker may be starting this very job.
        canceled_now = bool(
            JobLog.objects.filter(pk=job.pk, status__in=WAITING_STATUSES).update(
                status=JobStatus.CANCELED, cancel_requested_at=now, finished_at=now
            )
        )
        if canceled_now:
            event(job, EventKind.CANCELED, status=JobStatus.CANCELED, data={"by": by})
            transaction.on_commit(partial(_drop_from_redis, str(job.pk)))
            transaction.on_commit(partial(publish_status, job))  # job is refreshed below, before commit
        elif JobLog.objects.filter(pk=job.pk, status=JobStatus.RUNNING, cancel_requested_at__isnull=True).update(
            cancel_requested_at=now
        ):
            # Once per job: a repeated request re-sends the mark below but adds nothing to the timeline.
            event(job, EventKind.CANCEL_REQUESTED, status=JobStatus.RUNNING, data={"by": by})
        job.refresh_from_db()
        if job.status == JobStatus.RUNNING and job.cancel_requested_at is not None:
            # The first request, or a repeat of one whose mark may never have reached Redis.
            transaction.on_commit(partial(send_cancel_marks, [job]))
    if job.is_finished and not canceled_now:
        raise JobAlreadyFinished(f"The job is already {job.status}.")
    return job


def cancel_waiting(ids: Sequence[Any], *, by: Any = None, message: str = "") -> int:
    """Cancel the jobs among ``ids`` that still wait, at once; returns how many."""
    now = timezone.now()
    with transaction.atomic():
        # The stamp tells the rows this update canceled from any canceled meanwhile by someone else.
        JobLog.objects.filter(pk__in=ids, status__in=WAITING_STATUSES).update(
            status=JobStatus.CANCELED, cancel_requested_at=now, finished_at=now
        )
        canceled = list(
            JobLog.objects.filter(pk__in=ids, status=JobStatus.CANCELED, cancel_requested_at=now).values_list(
                "pk", "attempts"
            )
        )
        JobEvent.objects.bulk_create(
            JobEvent(
                job_id=pk,
                kind=EventKind.CANCELED,
                status=JobStatus.CANCELED,
                attempt=attempts,
                message=message,
                data={"by": by},
            )
            for pk, attempts in canceled
        )
        for pk, _attempts in canceled:
            transaction.on_commit(partial(_drop_from_redis, str(pk)))
    return len(canceled)


def send_cancel_marks(jobs: Sequence[JobLog]) -> int:
    """Tell the workers running these jobs, through Redis, that a cancel was asked for; returns how many marks were
    set. Best effort: the request is recorded in SQL already, and the reconciler sends the marks again (see
    jobs.reconciler) until the jobs end, so a Redis error here is logged, not raised."""
    settings = jobs_settings()
    sent = 0
    for job in jobs:
        job_type = registry.find(job.job_type)
        # The mark outlives the longest the attempt may still run: its timeout, plus the grace to stop.
        ttl = (job_type.timeout if job_type else settings.DEFAULT_TIMEOUT) + int(settings.CANCEL_GRACE) + 60
        try:
            transport.mark_canceled(str(job.pk), ttl)
        except TransportError:
            logger.warning("Could not send the cancel request of job %s to Redis; sent again later", job.pk)
            return sent  # Redis is away: the others would fail too
        sent += 1
    return sent


def _drop_from_redis(job_id: str) -> None:
    # The row already says canceled and a start checks it, so a Redis error here loses nothing.
    try:
        transport.drop_waiting(job_id)
    except TransportError:
        logger.warning("Could not remove canceled job %s from Redis", job_id, exc_info=True)
