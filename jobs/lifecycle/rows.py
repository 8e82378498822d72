"""What every transition writes beside its row: the timeline event; and the guard of an attempt's outcome."""

from __future__ import annotations

import logging
from typing import Any

from ..models import JobEvent, JobLog

logger = logging.getLogger(__name__)

IN_CLAUSE = 1000  # ids per IN (...) list, whatever the database's parameter limit


def event(job: JobLog, kind: str, *, status: str | None = None, message: str = "", data: Any = None) -> None:
    JobEvent.objects.create(
        job=job, kind=kind, status=status or job.status, attempt=job.attempts, message=message, data=data or {}
    )


def this_attempt(job: JobLog) -> Any:
    """The row, only while it is still in the state this process last saw (its attempt, its status): the
    reconciler may have taken the job over, and a late outcome must not overwrite the newer attempt's."""
    return JobLog.objects.filter(pk=job.pk, status=job.status, attempts=job.attempts)


def taken_over(job: JobLog) -> None:
    logger.warning("Job %s: the outcome of attempt %s was discarded; the job was taken over.", job.pk, job.attempts)
