"""The other outcomes of an attempt, one job at a time: failed, canceled, retried later, deferred, returned, lost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import registry
from ..live.publish import publish_status
from ..models import EventKind, JobEvent, JobLog, JobStatus
from .handoff import hand_over, waiting_status
from .rows import event, taken_over, this_attempt

# The longest error message shown to a job's owner; the whole text goes to the traceback.
MAX_ERROR_MESSAGE = 500
TRACEBACK_HEADER = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Error:
    """An attempt's error. ``message`` is one line: the owner sees it (job JSON, status frames, the timeline).
    A longer text (a traceback carried in an exception's message, many lines) goes whole to ``traceback``, which
    only users with jobs.view_joblog see: tracebacks name files, settings and other users' data."""

    type: str
    message: str
    traceback: str = ""

    def __post_init__(self) -> None:
        summary = one_line(self.message)
        if summary == self.message:
            return
        full = self.message.strip()
        object.__setattr__(self, "message", summary)
        if full and full not in self.traceback:
            object.__setattr__(self, "traceback", f"{self.traceback.rstrip()}\n\n{full}".strip())


def one_line(text: str) -> str:
    """The line of ``text`` that says what went wrong: the last one of a traceback, else the first; shortened."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if TRACEBACK_HEADER in text else lines[0]
    return line if len(line) <= MAX_ERROR_MESSAGE else line[: MAX_ERROR_MESSAGE - 1] + "…"


def fail(job: JobLog, error: Error, progress: Mapping[str, Any] | None = None) -> bool:
    """The attempt failed for good: failed, with its error. False when the job was taken over meanwhile."""
    return _finish(
        job,
        JobStatus.FAILED,
        EventKind.FAILED,
        progress,
        fields={"error_type": error.type, "error_message": error.message, "traceback": error.traceback},
        message=error.message,
        data={"error_type": error.type, "traceback": error.traceback},
    )


def cancel_running(job: JobLog, progress: Mapping[str, Any] | None = None, result: Any = None) -> bool:
    """A running attempt stopped on a cancel request: canceled, with whatever the handler returned."""
    return _finish(job, JobStatus.CANCELED, EventKind.CANCELED, progress, fields={"result": result})


def _finish(
    job: JobLog,
    status: str,
    kind: str,
    progress: Mapping[str, Any] | None,
    *,
    fields: dict[str, Any],
    message: str = "",
    data: dict[str, Any] | None = None,
) -> bool:
    now = timezone.now()
    with transaction.atomic():
        if not this_attempt(job).update(status=status, finished_at=now, **{**(progress or {}), **fields}):
            taken_over(job)
            return False
        event(job, kind, status=status, message=message, data=data)
    for name, value in {**(progress or {}), **fields, "status": status, "finished_at": now}.items():
        setattr(job, name, value)
    transaction.on_commit(partial(publish_status, job))
    return True


def retry_later(job: JobLog, error: Error, delay: float, progress: Mapping[str, Any] | None = None) -> bool:
    """The attempt failed and another one is due in ``delay`` seconds: scheduled, with this attempt's error. The
    worker that ran it hands the job back to rq's schedule (it holds the claim)."""
    run_at = timezone.now() + timedelta(seconds=delay)
    fields = {"error_type": error.type, "error_message": error.message, "traceback": error.traceback}
    with transaction.atomic():
        if not this_attempt(job).update(status=JobStatus.SCHEDULED, run_at=run_at, **{**(progress or {}), **fields}):
            taken_over(job)
            return False
        data = {"error_type": error.type, "traceback": error.traceback, "delay": round(delay, 3)}
        event(
            job,
            EventKind.RETRY_SCHEDULED,
            status=JobStatus.SCHEDULED,
            message=error.message,
            data={**data, "run_at": run_at.isoformat()},
        )
    job.status, job.run_at, job.error_type, job.error_message = JobStatus.SCHEDULED, run_at, error.type, error.message
    transaction.on_commit(partial(publish_status, job))
    return True


def defer(job: JobLog, wait: float, reason: str) -> datetime:
    """A limit keeps a waiting job from starting: scheduled for ``wait`` seconds from now, no attempt spent. The
    timeline gets one entry per waiting spell, not one per deferral (a busy limit would flood it)."""
    run_at = timezone.now() + timedelta(seconds=wait)
    with transaction.atomic():
        if not JobLog.objects.filter(pk=job.pk, status=job.status).update(status=JobStatus.SCHEDULED, run_at=run_at):
            return run_at  # canceled meanwhile: nothing waits any more
        last = JobEvent.objects.filter(job=job).order_by("-created_at", "-id").values_list("kind", flat=True).first()
        if last != EventKind.DEFERRED:
            event(job, EventKind.DEFERRED, status=JobStatus.SCHEDULED, message=reason)
    job.status, job.run_at = JobStatus.SCHEDULED, run_at
    transaction.on_commit(partial(publish_status, job))
    return run_at


SHUTDOWN = "The worker shut down before the job finished; it went back to its queue."


def return_to_queue(job: JobLog, progress: Mapping[str, Any] | None = None, *, reason: str = SHUTDOWN) -> bool:
    """A running attempt was stopped by its worker (shutting down, or ending a stuck process): back to queued, and
    the attempt does not count. The worker hands the job back to rq (it holds the claim)."""
    now = timezone.now()
    attempts = max(0, job.attempts - 1)
    with transaction.atomic():
        if not JobLog.objects.filter(pk=job.pk, status=JobStatus.RUNNING, attempts=job.attempts).update(
            status=JobStatus.QUEUED,
            attempts=attempts,
            started_at=None,
            enqueued_at=now,  # back at the tail of its list: the reconciler reasons with this order
            **(progress or {}),
        ):
            return False
        job.status, job.attempts, job.started_at, job.enqueued_at = JobStatus.QUEUED, attempts, None, now
        event(
            job, EventKind.INTERRUPTED, message="The worker stopped before the job finished; it went back to its queue."
        )
    transaction.on_commit(partial(publish_status, job))
    return True


def lost(job_id: Any, reason: str) -> None:
    """The attempt running ``job_id`` stopped beating (its worker was killed): canceled if a cancel was asked for,
    else retried after its backoff (handed to Redis again) while attempts are left, else failed."""
    job = JobLog.objects.filter(pk=job_id, status=JobStatus.RUNNING).first()
    if job is None:
        return
    reason = one_line(reason)  # shown to the owner, like every error message
    if job.cancel_requested_at is not None:
        _finish(job, JobStatus.CANCELED, EventKind.CANCELED, None, fields={}, message=reason)
        return
    job_type = registry.find(job.job_type)
    if job_type is None:
        fail(job, Error("UnknownJobType", f"There is no job type named {job.job_type!r}."))
        return
    used = job.attempts - job.attempts_before_retry
    if used >= job.max_attempts:
        fail(job, Error("WorkerLost", reason))
        return
    delay = job_type.backoff_delay(used)
    now = timezone.now()
    run_at = now + timedelta(seconds=delay)
    status = waiting_status(run_at, now)
    with transaction.atomic():
        if not this_attempt(job).update(
            status=status, run_at=run_at, enqueued_at=now, error_type="WorkerLost", error_message=reason
        ):
            return
        job.status, job.run_at, job.enqueued_at = status, run_at, now
        job.error_type, job.error_message = "WorkerLost", reason
        event(
            job,
            EventKind.RETRY_SCHEDULED,
            status=status,
            message=reason,
            data={"error_type": "WorkerLost", "delay": round(delay, 3)},
        )
        transaction.on_commit(partial(hand_over, [job], replace=True, raise_errors=False))
