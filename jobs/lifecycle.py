"""Every status change of a job: one function per transition, and nothing else writes ``JobLog.status``.

Each transition writes the row and its timeline event in one transaction and tells live listeners once that
commits. A job handed to Redis is handed over after the commit, always the same way (``_hand_over``): the row says
queued (or scheduled) before the push, and a push that fails puts it back to pending, where the reconciler finds
it. A worker never sees a job whose row is not committed, and an accepted job is never lost.

Outcomes of an attempt are conditional on the row still being in that attempt (running, same attempt count): the
reconciler may have taken a job over from a worker it thought lost, and a late outcome must not overwrite the
newer attempt's. Statements are the ORM's, but for the start and the success of a batch of attempts on PostgreSQL
(see lifecycle_postgresql.py, and bench/lifecycle_ab.py for what it saves).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from . import lifecycle_postgresql, registry
from .conf import jobs_settings
from .exceptions import JobAlreadyFinished, JobNotRetryable
from .live.publish import publish_status
from .models import WAITING_STATUSES, EventKind, JobEvent, JobLog, JobStatus
from .transport import queues as transport
from .transport.connections import TransportError

logger = logging.getLogger(__name__)

IN_CLAUSE = 1000  # ids per IN (...) list, whatever the database's parameter limit


# ---------------------------------------------------------------------------------------------------------------
# Queue: new rows, and rows handed to Redis again


def queue_new(jobs: Sequence[JobLog], *, publish: bool = True) -> None:
    """INSERT new rows, each queued (or scheduled for a later run_at), with their "submitted" events; hand them to
    Redis once the caller's transaction commits."""
    with transaction.atomic():  # a savepoint inside the caller's transaction: a unique key clash stays contained
        JobLog.objects.bulk_create(jobs, batch_size=IN_CLAUSE)
        JobEvent.objects.bulk_create(
            (JobEvent(job=job, kind=EventKind.SUBMITTED, status=job.status, data=submitted_data(job)) for job in jobs),
            batch_size=IN_CLAUSE,
        )
    transaction.on_commit(partial(_hand_over, list(jobs), publish=publish, raise_errors=False))


def submitted_data(job: JobLog) -> dict[str, Any]:
    data: dict[str, Any] = {"priority": job.priority, "queue": job.queue}
    if job.run_at:
        data["run_at"] = job.run_at.isoformat()
    return data


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
        transaction.on_commit(partial(_hand_over, moved, replace=True, raise_errors=True))
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
        _event(job, EventKind.RETRIED, data={"by": by})
        transaction.on_commit(partial(_hand_over, [job], replace=True, raise_errors=False))
    return job


def _hand_over(jobs: list[JobLog], *, replace: bool = False, publish: bool = True, raise_errors: bool) -> None:
    """The one hand-off, run after the rows committed as queued or scheduled: push them, and on a Redis error put
    them back to pending (the reconciler pushes them later)."""
    if not jobs:
        return
    try:
        transport.push([_handoff(job) for job in jobs], replace=replace)
    except TransportError as exc:
        logger.warning("Redis unavailable, %d job(s) stay pending: %s", len(jobs), exc)
        _back_to_pending(jobs)
        if raise_errors:
            raise
        return
    if publish:
        for job in jobs:
            publish_status(job)


def _handoff(job: JobLog) -> transport.Handoff:
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


def _back_to_pending(jobs: list[JobLog]) -> None:
    ids = [job.pk for job in jobs]
    for start in range(0, len(ids), IN_CLAUSE):
        JobLog.objects.filter(
            pk__in=ids[start : start + IN_CLAUSE], status__in=(JobStatus.QUEUED, JobStatus.SCHEDULED)
        ).update(status=JobStatus.PENDING, enqueued_at=None)
    for job in jobs:
        if job.status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            job.status, job.enqueued_at = JobStatus.PENDING, None


# ---------------------------------------------------------------------------------------------------------------
# Start and succeed: batches of attempts


def start(ids: Sequence[uuid.UUID], worker_name: str, *, job_types: Collection[str] | None = None) -> list[JobLog]:
    """Start an attempt of each job that still waits (any waiting status): running, one more attempt, no per-item
    failures yet (they belong to one attempt), a "started" event each. Returns the rows as written; a job that no
    longer waits (canceled meanwhile, or a duplicate delivery of one that ran) is left alone, and so is one whose
    type is not in ``job_types`` (when given)."""
    types = None if job_types is None else list(job_types)
    if not ids or types == []:
        return []
    now = timezone.now()
    worker_name = worker_name[:200]
    if connection.vendor == "postgresql":
        jobs = lifecycle_postgresql.start(ids, now, worker_name, job_types=types)
    else:
        jobs = _start_orm(ids, now, worker_name, job_types=types)
    for job in jobs:
        publish_status(job)
    return jobs


def _start_orm(
    ids: Sequence[uuid.UUID], now: datetime, worker_name: str, *, job_types: list[str] | None
) -> list[JobLog]:
    with transaction.atomic():
        waiting = JobLog.objects.select_for_update().filter(pk__in=ids, status__in=WAITING_STATUSES)
        jobs = list(waiting if job_types is None else waiting.filter(job_type__in=job_types))
        if not jobs:
            return []
        fields = {"status": JobStatus.RUNNING, "started_at": now, "updated_at": now, "worker_name": worker_name}
        JobLog.objects.filter(pk__in=[job.pk for job in jobs]).update(
            attempts=F("attempts") + 1, failed_items=[], failed_items_count=0, **fields
        )
        for job in jobs:
            for name, value in fields.items():
                setattr(job, name, value)
            job.attempts += 1
            job.failed_items, job.failed_items_count = [], 0
        JobEvent.objects.bulk_create(
            JobEvent(job=job, kind=EventKind.STARTED, status=JobStatus.RUNNING, attempt=job.attempts) for job in jobs
        )
    return jobs


@dataclass
class Success:
    """An attempt whose handler returned: its row as started, its last progress, and its JSON result."""

    job: JobLog
    progress: Mapping[str, Any]  # JobContext.progress_fields()
    result: Any


# What a success writes besides its status and times: the handler's result and the attempt's last progress.
SUCCESS_FIELDS = (
    "result",
    "progress_percent",
    "progress_message",
    "progress_stage",
    "progress_data",
    "failed_items",
    "failed_items_count",
)


def succeed(done: Sequence[Success]) -> set[uuid.UUID]:
    """Record these attempts as succeeded, each only while the row is still in that attempt; returns the ids
    written (the others were taken over, and keep their newer state)."""
    if not done:
        return set()
    now = timezone.now()
    for success in done:
        job = success.job
        for name, value in success.progress.items():
            setattr(job, name, value)
        job.progress_percent, job.result = 100, success.result
    if connection.vendor == "postgresql":
        written = lifecycle_postgresql.succeed([success.job for success in done], now)
    else:
        written = _succeed_orm([success.job for success in done], now)
    for success in done:
        job = success.job
        if job.pk in written:
            job.status, job.finished_at, job.updated_at = JobStatus.SUCCEEDED, now, now
            publish_status(job)
        else:
            _taken_over(job)
    return written


def _succeed_orm(jobs: list[JobLog], now: datetime) -> set[uuid.UUID]:
    # One conditional UPDATE per distinct outcome (a batch of no-op jobs shares one): the ORM's bulk_update would
    # build a CASE per row and field in Python, most of a batch's time.
    groups: dict[str, list[JobLog]] = {}
    for job in jobs:
        key = json.dumps([job.attempts, _written_on_success(job)], sort_keys=True, cls=DjangoJSONEncoder)
        groups.setdefault(key, []).append(job)
    written: set[uuid.UUID] = set()
    with transaction.atomic():
        for group in groups.values():
            ids = [job.pk for job in group]
            count = JobLog.objects.filter(pk__in=ids, status=JobStatus.RUNNING, attempts=group[0].attempts).update(
                status=JobStatus.SUCCEEDED, finished_at=now, updated_at=now, **_written_on_success(group[0])
            )
            if count == len(ids):
                written.update(ids)
            elif count:  # some were taken over: the ones this UPDATE wrote carry its finished_at
                done = JobLog.objects.filter(pk__in=ids, status=JobStatus.SUCCEEDED, finished_at=now)
                written.update(done.values_list("pk", flat=True))
        JobEvent.objects.bulk_create(
            JobEvent(job=job, kind=EventKind.SUCCEEDED, status=JobStatus.SUCCEEDED, attempt=job.attempts)
            for job in jobs
            if job.pk in written
        )
    return written


def _written_on_success(job: JobLog) -> dict[str, Any]:
    return {name: getattr(job, name) for name in SUCCESS_FIELDS}


# ---------------------------------------------------------------------------------------------------------------
# The other outcomes of an attempt, one job at a time


@dataclass(frozen=True)
class Error:
    type: str
    message: str
    traceback: str = ""


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
        if not _this_attempt(job).update(status=status, finished_at=now, **{**(progress or {}), **fields}):
            _taken_over(job)
            return False
        _event(job, kind, status=status, message=message, data=data)
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
        if not _this_attempt(job).update(status=JobStatus.SCHEDULED, run_at=run_at, **{**(progress or {}), **fields}):
            _taken_over(job)
            return False
        data = {"error_type": error.type, "traceback": error.traceback, "delay": round(delay, 3)}
        _event(
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
            _event(job, EventKind.DEFERRED, status=JobStatus.SCHEDULED, message=reason)
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
        _event(
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
        if not _this_attempt(job).update(
            status=status, run_at=run_at, enqueued_at=now, error_type="WorkerLost", error_message=reason
        ):
            return
        job.status, job.run_at, job.enqueued_at = status, run_at, now
        job.error_type, job.error_message = "WorkerLost", reason
        _event(
            job,
            EventKind.RETRY_SCHEDULED,
            status=status,
            message=reason,
            data={"error_type": "WorkerLost", "delay": round(delay, 3)},
        )
        transaction.on_commit(partial(_hand_over, [job], replace=True, raise_errors=False))


# ---------------------------------------------------------------------------------------------------------------
# Cancel, asked for by a user


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
            _event(job, EventKind.CANCELED, status=JobStatus.CANCELED, data={"by": by})
            transaction.on_commit(partial(_drop_from_redis, str(job.pk)))
            transaction.on_commit(partial(publish_status, job))  # job is refreshed below, before commit
        elif JobLog.objects.filter(pk=job.pk, status=JobStatus.RUNNING, cancel_requested_at__isnull=True).update(
            cancel_requested_at=now
        ):
            _event(job, EventKind.CANCEL_REQUESTED, status=JobStatus.RUNNING, data={"by": by})
            job_type = registry.find(job.job_type)
            ttl = (job_type.timeout if job_type else jobs_settings().DEFAULT_TIMEOUT) + int(
                jobs_settings().CANCEL_GRACE
            )
            transaction.on_commit(partial(transport.mark_canceled, str(job.pk), ttl + 60))
        job.refresh_from_db()
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


def _drop_from_redis(job_id: str) -> None:
    # The row already says canceled and a start checks it, so a Redis error here loses nothing.
    try:
        transport.drop_waiting(job_id)
    except TransportError:
        logger.warning("Could not remove canceled job %s from Redis", job_id, exc_info=True)


# ---------------------------------------------------------------------------------------------------------------


def _event(job: JobLog, kind: str, *, status: str | None = None, message: str = "", data: Any = None) -> None:
    JobEvent.objects.create(
        job=job, kind=kind, status=status or job.status, attempt=job.attempts, message=message, data=data or {}
    )


def _this_attempt(job: JobLog) -> Any:
    """The row, only while it is still in the state this process last saw (its attempt, its status)."""
    return JobLog.objects.filter(pk=job.pk, status=job.status, attempts=job.attempts)


def _taken_over(job: JobLog) -> None:
    logger.warning("Job %s: the outcome of attempt %s was discarded; the job was taken over.", job.pk, job.attempts)
