"""The one way in: submit, cancel and retry jobs. The API, admin, schedules and user code all call these."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack

from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.utils import timezone

from . import lifecycle, registry
from .conf import jobs_settings
from .exceptions import (
    IdempotencyConflict,
    InvalidPayload,
    InvalidSubmission,
    JobNotFound,
    JobNotRetryable,
    JobTypeForbidden,
    PayloadTooLarge,
    QueueNotFound,
    SubmitRateExceeded,
)
from .models import WAITING_STATUSES, JobLog, JobSchedule, JobStatus, PausedQueue
from .registry import JobType
from .transport import limits
from .transport import queues as transport
from .transport.connections import TransportError
from .types import PRIORITIES, Priority

logger = logging.getLogger(__name__)


class SubmitOptions(TypedDict, total=False):
    """What a submission may say besides its type and payload: get_or_submit()'s keyword arguments."""

    user: Any
    priority: Priority
    delay: float | None
    run_at: datetime | None
    idempotency_key: str | None
    schedule: JobSchedule | None


def submit(type_name: str, payload: Mapping[str, Any] | None = None, **options: Unpack[SubmitOptions]) -> JobLog:
    """Record a job (its owner ``user``, a ``priority``, a ``delay`` or ``run_at``, an ``idempotency_key``) and hand
    it to Redis when the caller's transaction commits."""
    job, _created = get_or_submit(type_name, payload, **options)
    return job


def get_or_submit(
    type_name: str,
    payload: Mapping[str, Any] | None = None,
    *,
    user: Any = None,
    priority: Priority = "normal",
    delay: float | None = None,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
    schedule: JobSchedule | None = None,
) -> tuple[JobLog, bool]:
    """Like submit(); also says whether a job was created (False: an idempotent replay of an earlier one)."""
    job_type, owner = _submitter_checks(type_name, user, priority)
    run_at = _resolve_run_at(delay, run_at)
    if idempotency_key is not None and not (isinstance(idempotency_key, str) and 0 < len(idempotency_key) <= 255):
        raise InvalidSubmission("An idempotency key is a non-empty string of at most 255 characters.")
    clean_payload = _clean_payload(job_type, payload)

    if idempotency_key:
        existing = _find_idempotent(type_name, owner, idempotency_key)
        if existing is not None:
            return _replay(existing, clean_payload), False

    _charge(owner, 1)
    job = _new_job(
        job_type,
        clean_payload,
        owner=owner,
        priority=priority,
        run_at=run_at,
        now=timezone.now(),
        idempotency_key=idempotency_key,
        schedule=schedule,
    )
    try:
        lifecycle.queue_new([job])
    except IntegrityError:
        # Two submissions raced with one idempotency key: the other one won, answer with its job.
        existing = _find_idempotent(type_name, owner, idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return _replay(existing, clean_payload), False
    return job, True


def submit_many(
    type_name: str,
    payloads: Iterable[Mapping[str, Any] | None],
    *,
    user: Any = None,
    priority: Priority = "normal",
    delay: float | None = None,
    run_at: datetime | None = None,
) -> list[JobLog]:
    """Submit one job of ``type_name`` per payload with a few bulk statements; all or nothing.

    Every payload is validated first: one bad payload raises (its position in the message and in
    ``InvalidPayload.errors``) and nothing is written. The jobs are handed to Redis on commit in pipelined round
    trips. Idempotency keys are for single submissions; bulk jobs publish no per-job "queued" frames.
    """
    job_type, owner = _submitter_checks(type_name, user, priority)
    run_at = _resolve_run_at(delay, run_at)
    cleaned: list[dict[str, Any]] = []
    for index, payload in enumerate(payloads):
        try:
            cleaned.append(_clean_payload(job_type, payload))
        except InvalidPayload as exc:
            raise InvalidPayload({str(index): exc.errors}, f"Payload #{index} is invalid: {exc}") from None
        except InvalidSubmission as exc:
            raise type(exc)(f"Payload #{index}: {exc}") from None
    if not cleaned:
        return []
    _charge(owner, len(cleaned))
    now = timezone.now()
    jobs = [_new_job(job_type, payload, owner=owner, priority=priority, run_at=run_at, now=now) for payload in cleaned]
    lifecycle.queue_new(jobs, publish=False)
    return jobs


def _new_job(
    job_type: JobType,
    payload: dict[str, Any],
    *,
    owner: Any,
    priority: Priority,
    run_at: datetime | None,
    now: datetime,
    **fields: Any,
) -> JobLog:
    """The unsaved row of a submission, in the status its hand-off to Redis gives it (see jobs.lifecycle)."""
    return JobLog(
        job_type=job_type.name,
        queue=job_type.queue,
        priority=priority,
        status=lifecycle.waiting_status(run_at, now),
        enqueued_at=now,
        payload=payload,
        max_attempts=job_type.max_attempts,
        owner=owner,
        run_at=run_at,
        **fields,
    )


def _submitter_checks(type_name: str, user: Any, priority: Any) -> tuple[JobType, Any]:
    """The job type, and the owner to record; raises when this user may not submit it at this priority."""
    job_type = registry.get(type_name)
    owner = user if getattr(user, "is_authenticated", False) else None
    if job_type.staff_only and user is not None and not getattr(user, "is_staff", False):
        raise JobTypeForbidden(f"Only staff may submit {type_name!r} jobs.")
    if priority not in PRIORITIES:
        raise InvalidSubmission(f"Priority must be one of {', '.join(PRIORITIES)}, not {priority!r}.")
    return job_type, owner


def _charge(owner: Any, count: int) -> None:
    """Charge ``count`` submissions to ``owner``'s JOBS["SUBMIT_RATE"] budget, all or none; raises
    SubmitRateExceeded. System submissions (no owner) are free. Counted in Redis, so the budget holds across every
    web and worker process; with Redis away the charge is skipped: a submission is never refused for that (the
    row waits for the reconciler like any other)."""
    rate = jobs_settings().SUBMIT_RATE
    if owner is None or rate is None:
        return
    try:
        wait = limits.take_submissions(str(owner.pk), count, rate)
    except TransportError as exc:
        logger.warning("Submission budget not checked, Redis unavailable: %s", exc)
        return
    if wait < 0:
        raise SubmitRateExceeded(
            limits.parse_submit_rate(rate)[1], f"{count} submissions at once are more than the {rate} allowed."
        )
    if wait > 0:
        raise SubmitRateExceeded(wait, f"Too many submissions (at most {rate}); try again in {math.ceil(wait)} s.")


def _resolve_run_at(delay: float | None, run_at: datetime | None) -> datetime | None:
    if delay is not None and run_at is not None:
        raise InvalidSubmission("Give either delay or run_at, not both.")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay) or delay < 0:
            raise InvalidSubmission("delay is a number of seconds, 0 or more.")
        return timezone.now() + timedelta(seconds=delay) if delay > 0 else None
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise InvalidSubmission("run_at must be a datetime.")
        if timezone.is_naive(run_at):
            raise InvalidSubmission("run_at must be timezone-aware.")
    return run_at


def _clean_payload(job_type: JobType, payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """The payload as it will be stored: within the size limit, valid for its type, and storable in every database;
    raises PayloadTooLarge, InvalidSubmission or InvalidPayload."""
    _check_size(payload)
    clean = job_type.validate(payload if payload is not None else {})
    # The stored form is checked, not the input: a type's serializer may turn text into a number such as NaN.
    if problem := unstorable_json(clean):
        raise InvalidPayload({"payload": [problem]}, f"The payload cannot be stored: {problem}")
    return clean


def unstorable_json(value: Any) -> str | None:
    """Why ``value`` cannot be stored in every supported database, or None.

    PostgreSQL's jsonb refuses NUL characters, lone surrogates and non-finite numbers that SQLite would take,
    and such a payload would otherwise fail as a 500 on one database and pass on another.
    """
    stack = [value]  # iterative: a deeply nested payload must not exhaust the Python stack
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "Text may not contain NUL (\\u0000) characters."
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "Text may not contain unpaired surrogate characters."
        elif isinstance(item, float) and not math.isfinite(item):
            return "Numbers must be finite."
    return None


def _check_size(payload: Mapping[str, Any] | None) -> None:
    limit = jobs_settings().MAX_PAYLOAD_BYTES
    try:
        size = len(json.dumps(payload, default=str).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidSubmission(f"The payload is not JSON: {exc}.") from None
    if size > limit:
        raise PayloadTooLarge(f"The payload is {size} bytes; at most {limit} are accepted.")


def _find_idempotent(type_name: str, owner: Any, key: str) -> JobLog | None:
    return JobLog.objects.filter(job_type=type_name, owner=owner, idempotency_key=key).first()


def _replay(existing: JobLog, clean_payload: dict[str, Any]) -> JobLog:
    if existing.payload != clean_payload:
        raise IdempotencyConflict()
    return existing


def forget_idempotency_keys(sender: Any, instance: Any, **kwargs: Any) -> None:
    """pre_delete receiver of the user model (wired in JobsConfig.ready): a deleted user's jobs lose their keys.

    Their owner becomes NULL, and ownerless rows share one idempotency scope, the system's: kept, the keys would
    collide there (deleting a second user who used the same key fails) or answer a system submission with a
    deleted user's job.
    """
    JobLog.objects.filter(owner=instance, idempotency_key__isnull=False).update(idempotency_key=None)


def get_job(job_id: Any, *, user: Any = None) -> JobLog:
    """The job with that id, if ``user`` may see it (None: no restriction); raises JobNotFound."""
    jobs = JobLog.objects.all() if user is None else JobLog.objects.visible_to(user)
    try:
        return jobs.get(pk=job_id)
    except (JobLog.DoesNotExist, ValidationError, ValueError, TypeError):
        # A malformed id is answered like an absent one: it names no job.
        raise JobNotFound() from None


def cancel_job(job: JobLog, *, user: Any = None) -> JobLog:
    """Cancel a waiting job at once, or ask a running one to stop; raises JobAlreadyFinished."""
    return lifecycle.cancel(job, by=getattr(user, "pk", None))


def retry_job(job: JobLog, *, user: Any = None) -> JobLog:
    """Run a failed or canceled job again under the same id, with a fresh budget of attempts."""
    return lifecycle.retry(job, by=getattr(user, "pk", None))


def _known_queue(name: str) -> str:
    if name not in {t.queue for t in registry.all_types()}:
        raise QueueNotFound(f"There is no queue named {name!r}.")
    return name


def pause_queue(name: str, *, user: Any = None) -> None:
    """Stop workers taking jobs from every priority level of queue ``name``; submissions still queue up.

    SQL first, then Redis: a pause recorded in SQL outlives a Redis wipe (the reconciler copies it back), and one
    whose Redis write failed is completed by the reconciler too.
    """
    PausedQueue.objects.get_or_create(name=_known_queue(name), defaults={"paused_by": _user_or_none(user)})
    transport.pause(name)


def resume_queue(name: str, *, user: Any = None) -> None:
    """Let workers take jobs from queue ``name`` again (SQL first, then Redis, like pause_queue)."""
    PausedQueue.objects.filter(name=_known_queue(name)).delete()
    transport.resume(name)


def _user_or_none(user: Any) -> Any:
    return user if getattr(user, "is_authenticated", False) else None


def requeue_failed(name: str, *, user: Any = None) -> int:
    """Retry every failed job of queue ``name`` (same ids, fresh budgets); returns how many."""
    count = 0
    for job in JobLog.objects.filter(queue=_known_queue(name), status=JobStatus.FAILED).order_by("created_at"):
        try:
            retry_job(job, user=user)
        except JobNotRetryable:
            continue  # retried by someone else meanwhile
        count += 1
    return count


def empty_queue(name: str, *, user: Any = None, batch_size: int = 500) -> int:
    """Cancel every job of queue ``name`` still waiting (pending, queued or scheduled); returns how many.

    Running jobs go on (cancel them one by one). Jobs submitted after the call began are left alone.
    """
    waiting = JobLog.objects.filter(
        queue=_known_queue(name), status__in=WAITING_STATUSES, created_at__lte=timezone.now()
    ).order_by()
    count = 0
    while ids := list(waiting.values_list("pk", flat=True)[:batch_size]):
        count += lifecycle.cancel_waiting(ids, by=getattr(user, "pk", None), message="The queue was emptied.")
    return count
