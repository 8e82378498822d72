"""The one way in: submit, cancel and retry jobs. The API, admin, schedules and user code all call these."""

from __future__ import annotations

import copy
import json
import logging
import math
import uuid
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, connections, models, transaction
from django.db.models.sql import InsertQuery
from django.utils import timezone

from . import queues, registry
from .conf import jobs_settings
from .exceptions import (
    IdempotencyConflict,
    InvalidPayload,
    InvalidSubmission,
    JobAlreadyFinished,
    JobNotFound,
    JobNotRetryable,
    JobTypeForbidden,
    PayloadTooLarge,
    QueueNotFound,
)
from .models import WAITING_STATUSES, EventKind, JobEvent, JobLog, JobSchedule, JobStatus
from .progress import publish_status
from .registry import JobType
from .types import PRIORITIES, Priority

logger = logging.getLogger(__name__)


def submit(
    type_name: str,
    payload: Mapping[str, Any] | None = None,
    *,
    user: Any = None,
    priority: Priority = "normal",
    delay: float | None = None,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
    schedule: JobSchedule | None = None,
) -> JobLog:
    """Record a job as pending and hand it to rq when the transaction commits."""
    job, _created = get_or_submit(
        type_name,
        payload,
        user=user,
        priority=priority,
        delay=delay,
        run_at=run_at,
        idempotency_key=idempotency_key,
        schedule=schedule,
    )
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
    _check_size(payload)
    clean_payload = job_type.validate(payload if payload is not None else {})

    if idempotency_key:
        existing = _find_idempotent(type_name, owner, idempotency_key)
        if existing is not None:
            return _replay(existing, clean_payload), False

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
        _insert_with_event(job)
    except IntegrityError:
        # Two submissions raced with one idempotency key: the other one won, answer with its job.
        existing = _find_idempotent(type_name, owner, idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return _replay(existing, clean_payload), False
    # After commit, so a worker never sees a missing row; if Redis is down the reconciler pushes later.
    transaction.on_commit(partial(queues.push_submitted, job))
    return job, True


def submit_many(
    type_name: str,
    payloads: Iterable[Mapping[str, Any] | None],
    *,
    user: Any = None,
    priority: Priority = "normal",
    delay: float | None = None,
    run_at: datetime | None = None,
    batch_size: int = 1000,
) -> list[JobLog]:
    """Submit one job of ``type_name`` per payload with a few bulk statements; all or nothing.

    Every payload is validated first: one bad payload raises (its position in the message and in
    ``InvalidPayload.errors``) and nothing is written. The rows are pushed to rq on commit in pipelined round
    trips. Idempotency keys are for single submissions; bulk jobs publish no per-job "queued" frames.
    """
    job_type, owner = _submitter_checks(type_name, user, priority)
    run_at = _resolve_run_at(delay, run_at)
    cleaned: list[dict[str, Any]] = []
    for index, payload in enumerate(payloads):
        try:
            _check_size(payload)
            cleaned.append(job_type.validate(payload if payload is not None else {}))
        except InvalidPayload as exc:
            raise InvalidPayload({str(index): exc.errors}, f"Payload #{index} is invalid: {exc}") from None
        except InvalidSubmission as exc:
            raise type(exc)(f"Payload #{index}: {exc}") from None
    if not cleaned:
        return []
    # Written as what the push makes them, so no UPDATE follows it (see _new_job).
    template = _new_job(job_type, {}, owner=owner, priority=priority, run_at=run_at, now=timezone.now())
    jobs = _rows_like(template, cleaned)
    event_data = _submitted_data(jobs[0])  # every job of the call has the same status, priority, queue and run_at
    one_statement = connection.vendor == "postgresql" and len(jobs) <= batch_size  # atomic by itself
    insert = _insert_many_with_events if connection.vendor == "postgresql" else _insert_many_one_by_one
    with nullcontext() if one_statement else transaction.atomic():
        for start in range(0, len(jobs), batch_size):
            insert(jobs[start : start + batch_size], event_data)
    transaction.on_commit(partial(queues.push_many, jobs))
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
    """The unsaved row of a submission.

    Written as what the push on commit makes it (queued, or scheduled for a later run_at), so a submission
    commits once: if the push fails, the row goes back to pending, and if this process dies before pushing, the
    reconciler finds a queued row that Redis lacks and pushes it.
    """
    return JobLog(
        job_type=job_type.name,
        queue=job_type.queue,
        priority=priority,
        status=JobStatus.SCHEDULED if run_at is not None and run_at > now else JobStatus.QUEUED,
        enqueued_at=now,
        payload=payload,
        max_attempts=job_type.max_attempts,
        owner=owner,
        run_at=run_at,
        **fields,
    )


def _rows_like(template: JobLog, payloads: list[dict[str, Any]]) -> list[JobLog]:
    """Unsaved rows equal to ``template`` but for a new id and their payload.

    Built from positional values, as Model.from_db builds rows: keyword construction would work out every default
    and descriptor again per row, three times the cost (most of a bulk submission's Python time).
    """
    fields = JobLog._meta.concrete_fields
    values = [getattr(template, field.attname) for field in fields]
    id_index = next(i for i, field in enumerate(fields) if field.attname == "id")
    payload_index = next(i for i, field in enumerate(fields) if field.attname == "payload")
    # The other JSON values are containers (an empty list, say): every row gets its own, never one shared by all.
    containers = [i for i, value in enumerate(values) if isinstance(value, list | dict) and i != payload_index]
    owner = template.owner
    rows = []
    for payload in payloads:
        row_values = list(values)
        row_values[id_index] = uuid.uuid4()
        row_values[payload_index] = payload
        for index in containers:
            row_values[index] = copy.deepcopy(values[index])
        row = JobLog(*row_values)  # type: ignore[misc]  # positional, as Model.from_db; the stubs know keywords only
        if owner is not None:
            JobLog.owner.field.set_cached_value(row, owner)  # as keyword construction would: job.owner costs no query
        rows.append(row)
    return rows


def _insert_with_event(job: JobLog) -> None:
    """INSERT the row and its "submitted" event together: one statement on PostgreSQL, a transaction elsewhere."""
    event = JobEvent(job=job, kind=EventKind.SUBMITTED, status=job.status, data=_submitted_data(job))
    # Django builds each INSERT (defaults, auto_now_add, JSON encoding), so the SQL is exactly what save() would send.
    job_sql, job_params = _insert_sql(job)
    event_sql, event_params = _insert_sql(event)
    if connection.vendor != "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(job_sql, job_params)
            cursor.execute(event_sql, event_params)
    else:
        # A data-modifying CTE: both rows in one round trip and one implicit transaction. Inside the caller's
        # transaction, a savepoint: a duplicate idempotency key must not abort the caller's work.
        with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
            cursor.execute(f"WITH job AS ({job_sql}) {event_sql}", [*job_params, *event_params])
    job._state.adding = event._state.adding = False
    job._state.db = event._state.db = connection.alias


def _insert_sql(obj: JobLog | JobEvent) -> tuple[str, list[Any]]:
    """Django's own INSERT for ``obj`` (defaults, auto_now_add, JSON adaptation), its text built once per model."""
    model = type(obj)
    cached = _insert_statements.get(model)
    if cached is None:
        fields = _insert_fields(model)
        query = InsertQuery(model)
        query.insert_values(fields, [obj])
        [(statement, _params)] = query.get_compiler(connection=connection).as_sql()
        cached = _insert_statements[model] = (statement, fields)
    statement, fields = cached
    # What the INSERT compiler does per value (pre_save, then get_db_prep_save; our rows hold no expressions),
    # with this thread's connection looked up once: through the django.db.connection proxy, every value's
    # adaptation looked it up again, a third of this function's time.
    db = connections[connection.alias]
    return statement, [field.get_db_prep_save(field.pre_save(obj, True), db) for field in fields]


_insert_statements: dict[type[Any], tuple[str, list[Any]]] = {}


def _insert_fields(model: type[models.Model]) -> list[Any]:
    """The columns Django's INSERT for ``model`` names, in its order."""
    meta = model._meta
    return [field for field in meta.local_concrete_fields if field is not meta.auto_field]


def _insert_many_with_events(jobs: list[JobLog], event_data: dict[str, Any]) -> None:
    """PostgreSQL: INSERT rows that differ only in id and payload, and their "submitted" events, in one statement.

    Django's INSERT for the first row becomes an INSERT ... SELECT over two array parameters (the ids and the
    payloads, each sent as one text), so no value is prepared per row but the payload's JSON text: bulk_create
    would build and adapt every column of every row and event.
    """
    first = jobs[0]
    job_sql, job_params = _insert_sql(first)
    event = JobEvent(job=first, kind=EventKind.SUBMITTED, status=first.status, data=event_data)
    event_sql, event_params = _insert_sql(event)
    job_columns = _select_list(job_sql, job_params, {"id": "t.id", "payload": "t.payload"}, JobLog)
    event_columns = _select_list(event_sql, event_params, {"job_id": "job.id"}, JobEvent)
    ids = ",".join(str(job.pk) for job in jobs)
    payloads = json.dumps([job.payload for job in jobs])
    sql = (
        f"WITH job AS ({job_sql.partition(' VALUES ')[0]} SELECT {job_columns[0]} FROM unnest("
        "string_to_array(%s, ',')::uuid[], "
        "ARRAY(SELECT e.value FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(value, n) ORDER BY e.n)"
        ") AS t(id, payload) RETURNING id) "
        f"{event_sql.partition(' VALUES ')[0]} SELECT {event_columns[0]} FROM job"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*job_columns[1], ids, payloads, *event_columns[1]])
    _mark_inserted(jobs, first)


def _insert_many_one_by_one(jobs: list[JobLog], event_data: dict[str, Any]) -> None:
    """Any other database: Django's INSERT for the first row and its event, executed once per row (executemany)
    with each row's own id and payload, for rows that differ only in those (see _rows_like).

    bulk_create would build and adapt every column of every row and event: on SQLite, three quarters of a bulk
    submission's time.
    """
    first = jobs[0]
    job_sql, job_params = _insert_sql(first)
    event_sql, event_params = _insert_sql(
        JobEvent(job=first, kind=EventKind.SUBMITTED, status=first.status, data=event_data)
    )
    job_columns = [field.attname for field in _insert_fields(JobLog)]
    id_index, payload_index = job_columns.index("id"), job_columns.index("payload")
    event_job_index = [field.attname for field in _insert_fields(JobEvent)].index("job_id")
    db = connections[connection.alias]
    id_field, payload_field = JobLog._meta.get_field("id"), JobLog._meta.get_field("payload")
    job_rows, event_rows = [], []
    for job in jobs:
        db_id = id_field.get_db_prep_save(job.pk, db)
        job_row, event_row = list(job_params), list(event_params)
        job_row[id_index], job_row[payload_index] = db_id, payload_field.get_db_prep_save(job.payload, db)
        event_row[event_job_index] = db_id
        job_rows.append(job_row)
        event_rows.append(event_row)
    with connection.cursor() as cursor:
        cursor.executemany(job_sql, job_rows)
        cursor.executemany(event_sql, event_rows)
    _mark_inserted(jobs, first)


def _mark_inserted(jobs: list[JobLog], first: JobLog) -> None:
    for job in jobs:
        job.created_at, job.updated_at = first.created_at, first.updated_at  # as written: one value for all
        job._state.adding = False
        job._state.db = connection.alias


def _select_list(
    insert_sql: str, params: list[Any], per_row: dict[str, str], model: type[models.Model]
) -> tuple[str, list[Any]]:
    """The SELECT list that replaces ``insert_sql``'s VALUES: a parameter per column, or ``per_row``'s expression."""
    columns = [field.column for field in _insert_fields(model)]
    values = insert_sql.partition(" VALUES ")[2]
    # Django writes one plain placeholder per column for these models; anything else is not what this rewrites.
    assert values == "(" + ", ".join(["%s"] * len(columns)) + ")", values
    select, kept = [], []
    for column, param in zip(columns, params, strict=True):
        if column in per_row:
            select.append(per_row[column])
        else:
            select.append("%s")
            kept.append(param)
    return ", ".join(select), kept


def _submitter_checks(type_name: str, user: Any, priority: Any) -> tuple[JobType, Any]:
    """The job type, and the owner to record; raises when this user may not submit it at this priority."""
    job_type = registry.get(type_name)
    owner = user if getattr(user, "is_authenticated", False) else None
    if job_type.staff_only and user is not None and not getattr(user, "is_staff", False):
        raise JobTypeForbidden(f"Only staff may submit {type_name!r} jobs.")
    if priority not in PRIORITIES:
        raise InvalidSubmission(f"Priority must be one of {', '.join(PRIORITIES)}, not {priority!r}.")
    return job_type, owner


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


def _submitted_data(job: JobLog) -> dict[str, Any]:
    data: dict[str, Any] = {"priority": job.priority, "queue": job.queue}
    if job.run_at:
        data["run_at"] = job.run_at.isoformat()
    return data


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
    now = timezone.now()
    by = getattr(user, "pk", None)
    with transaction.atomic():
        # Conditional updates, not read-then-write: a worker may be starting this very job.
        canceled_now = bool(
            JobLog.objects.filter(pk=job.pk, status__in=WAITING_STATUSES).update(
                status=JobStatus.CANCELED, cancel_requested_at=now, finished_at=now
            )
        )
        if canceled_now:
            JobEvent.objects.create(
                job=job, kind=EventKind.CANCELED, status=JobStatus.CANCELED, attempt=job.attempts, data={"by": by}
            )
            transaction.on_commit(partial(_drop_from_redis, str(job.id)))
            transaction.on_commit(partial(publish_status, job))  # job is refreshed below, before commit
        elif JobLog.objects.filter(pk=job.pk, status=JobStatus.RUNNING, cancel_requested_at__isnull=True).update(
            cancel_requested_at=now
        ):
            JobEvent.objects.create(
                job=job,
                kind=EventKind.CANCEL_REQUESTED,
                status=JobStatus.RUNNING,
                attempt=job.attempts,
                data={"by": by},
            )
            ttl = registry.get(job.job_type).timeout + int(jobs_settings().CANCEL_GRACE) + 60
            transaction.on_commit(partial(queues.request_cancel, str(job.id), ttl))
        job.refresh_from_db()
    # A running job whose cancel was already requested is fine: asking twice is not an error.
    if job.is_finished and not canceled_now:
        raise JobAlreadyFinished(f"The job is already {job.status}.")
    return job


def _drop_from_redis(job_id: str) -> None:
    # The SQL row already says canceled and the runner checks it, so a Redis error here loses nothing.
    try:
        queues.cancel_rq_job(job_id)
    except Exception:  # noqa: BLE001
        logger.warning("Could not remove canceled job %s from Redis", job_id, exc_info=True)


def retry_job(job: JobLog, *, user: Any = None) -> JobLog:
    """Run a failed or canceled job again under the same id, with a fresh budget of attempts."""
    job_type = registry.get(job.job_type)
    with transaction.atomic():
        updated = JobLog.objects.filter(pk=job.pk, status__in=(JobStatus.FAILED, JobStatus.CANCELED)).update(
            status=JobStatus.PENDING,
            attempts_before_retry=job.attempts,
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
        JobEvent.objects.create(
            job=job,
            kind=EventKind.RETRIED,
            status=JobStatus.PENDING,
            attempt=job.attempts,
            data={"by": getattr(user, "pk", None)},
        )
        transaction.on_commit(partial(queues.requeue, job))
    return job


def _known_queue(name: str) -> str:
    if name not in {t.queue for t in registry.all_types()}:
        raise QueueNotFound(f"There is no queue named {name!r}.")
    return name


def pause_queue(name: str) -> None:
    """Stop workers taking jobs from every priority level of queue ``name``; submissions still queue up."""
    queues.pause(_known_queue(name))


def resume_queue(name: str) -> None:
    queues.resume(_known_queue(name))


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
    now = timezone.now()
    by = getattr(user, "pk", None)
    waiting = JobLog.objects.filter(queue=_known_queue(name), status__in=WAITING_STATUSES, created_at__lte=now)
    count = 0
    while batch := list(waiting.order_by().values_list("pk", "attempts")[:batch_size]):
        ids = [pk for pk, _attempts in batch]
        with transaction.atomic():
            # Conditional, like cancel_job(): a worker may be starting some of these right now. The stamp tells
            # the rows this update canceled from any canceled meanwhile by someone else.
            JobLog.objects.filter(pk__in=ids, status__in=WAITING_STATUSES).update(
                status=JobStatus.CANCELED, cancel_requested_at=now, finished_at=now
            )
            canceled = set(
                JobLog.objects.filter(pk__in=ids, status=JobStatus.CANCELED, cancel_requested_at=now).values_list(
                    "pk", flat=True
                )
            )
            JobEvent.objects.bulk_create(
                JobEvent(
                    job_id=pk,
                    kind=EventKind.CANCELED,
                    status=JobStatus.CANCELED,
                    attempt=attempts,
                    message="The queue was emptied.",
                    data={"by": by},
                )
                for pk, attempts in batch
                if pk in canceled
            )
            for pk in canceled:
                transaction.on_commit(partial(_drop_from_redis, str(pk)))
        count += len(canceled)
    return count
