"""run_job(job_id): the only function rq calls. Moves a JobLog through running to its outcome."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import inspect
import json
import logging
import math
import os
import socket
import sqlite3
import threading
import time
import traceback as tb
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, connections, transaction
from django.db.models import F
from django.utils import timezone
from redis.exceptions import RedisError
from rq import get_current_job
from rq.command import send_stop_job_command
from rq.job import Retry
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException

from . import limits, queues, registry
from .conf import jobs_settings
from .exceptions import InvalidPayload, JobCanceled, UnknownJobType, WorkerShutdown
from .models import WAITING_STATUSES, EventKind, JobEvent, JobLog, JobStatus
from .progress import JobContext, flush_published, publish_status
from .registry import JobType
from .sqlite_writes import write_turn

logger = logging.getLogger(__name__)

# Set in forked work horses (jobs.worker), where stopping the horse cannot take the worker down with it.
in_work_horse = False

# The attempt this process is running now (fork and simple workers run one job at a time), for the shutdown timer.
current_watcher: AttemptWatcher | None = None

# rq counts Retry results against Retry.max; the runner keeps its own budget in SQL, so rq's never binds.
UNBOUNDED_RETRIES = 10**9


def run_job(job_id: str) -> Any:
    """Run one attempt of the JobLog ``job_id``: check limits, call the handler, record the outcome."""
    # Most types have no rate limit, so nothing needs deciding before their jobs start: the conditional start is
    # then the only read of the row (an ORM read first cost more than the start itself). Any other case (a rate
    # limit, an unregistered type, no row, a job that no longer waits) starts nothing here and is looked at below.
    started = start_attempts(
        [uuid.UUID(job_id)], timezone.now(), _worker_name(), job_types=registry.names_without_rate_limit()
    )
    if started:
        job_type = registry.get(started[0].job_type)
    else:
        job = JobLog.objects.filter(pk=job_id).first()
        if job is None:
            logger.warning("Job %s has no JobLog row; nothing to run.", job_id)
            return None
        if job.status not in WAITING_STATUSES:
            # Canceled before start, or a duplicate delivery of a job that already ran: never run twice.
            logger.info("Job %s is %s; not running it.", job_id, job.status)
            return None
        admitted = admit(job)
        if not isinstance(admitted, JobType):
            return admitted
        job_type = admitted
        # Conditional on the job still waiting (any waiting status, not only the one read above): a cancel that
        # lands in between wins.
        started = start_attempts([job.pk], timezone.now(), _worker_name())
        if not started:
            logger.info("Job %s changed while starting; not running it.", job_id)
            return None
    [job] = started
    attempt = job.attempts
    publish_status(job)

    ctx = JobContext(job, attempt)
    global current_watcher
    guard = AttemptGuard(ctx, ThreadInterrupter(threading.get_ident()))
    watcher = current_watcher = AttemptWatcher(guard)
    watcher.start()
    try:
        # The watcher keeps the liveness key fresh until the outcome is written, so a slow final write is
        # never mistaken for a lost worker.
        result, error = call_handler(job, job_type, ctx, guard)
        outcome = conclude(job, job_type, ctx, guard, result, error)
        if isinstance(outcome, Succeeded):
            finish_succeeded(job, ctx, outcome.result)
            return outcome.result
        return outcome
    finally:
        watcher.close()
        if in_work_horse:
            # A work horse leaves with os._exit, taking the publisher thread along: send its frames first.
            flush_published()


def start_attempts(
    ids: list[uuid.UUID], now: datetime, worker_name: str, *, job_types: Collection[str] | None = None
) -> list[JobLog]:
    """Start an attempt of each job that still waits (any waiting status): running, one more attempt, no per-item
    failures yet (they belong to one attempt), and a "started" event each. Returns the started rows as written;
    a job that no longer waits (canceled meanwhile, or a duplicate delivery of one that ran) is left alone, and
    so is one whose type is not in ``job_types`` (when given).

    One statement on PostgreSQL, one transaction elsewhere.
    """
    types = None if job_types is None else list(job_types)
    if types == []:
        return []
    if connection.vendor == "postgresql":
        return _start_attempts_postgresql(ids, now, worker_name, job_types=types)
    if connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35):  # UPDATE ... RETURNING
        return _start_attempts_sqlite(ids, now, worker_name, job_types=types)
    return _start_attempts_orm(ids, now, worker_name, job_types=types)


# The start of attempts commits without waiting for its WAL flush (synchronous_commit off for this one
# transaction; set_config(..., true) ends with it). The wait is most of the statement's time, and what it guards
# is small: only a crash of the database server itself within a fraction of a second can lose a start, and then
# the row still says queued, so the job runs again (at least once, as after a worker crash), never lost. The
# next durable commit flushes the WAL past it: every job that finished was also durably started. Inside a
# caller's transaction the setting would reach the caller's own writes, so there the start stays durable.
_ASYNC_COMMIT = "AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"


def _start_attempts_postgresql(
    ids: list[uuid.UUID], now: datetime, worker_name: str, *, job_types: list[str] | None
) -> list[JobLog]:
    # One statement, so one round trip and its own transaction: the UPDATE and the events' INSERT commit together.
    log, event = JobLog._meta.db_table, JobEvent._meta.db_table
    fields = JobLog._meta.concrete_fields
    quote = connection.ops.quote_name
    relaxed = "" if connection.in_atomic_block else _ASYNC_COMMIT
    of_types = "" if job_types is None else "AND job_type = ANY(%s::varchar[])"
    sql = f"""
        WITH started AS (
            UPDATE {quote(log)} SET status = %s, attempts = attempts + 1, started_at = %s, updated_at = %s,
                worker_name = %s, failed_items = '[]'::jsonb, failed_items_count = 0
            WHERE id = ANY(%s::uuid[]) AND status = ANY(%s::varchar[]) {of_types} {relaxed}
            RETURNING {", ".join(quote(str(field.column)) for field in fields)}
        ), events AS (
            INSERT INTO {quote(event)} (job_id, kind, status, attempt, message, data, created_at)
            SELECT id, %s, status, attempts, '', '{{}}'::jsonb, %s FROM started
        )
        SELECT * FROM started
    """
    params: list[Any] = [JobStatus.RUNNING, now, now, worker_name, ids, list(WAITING_STATUSES)]
    params += [] if job_types is None else [job_types]
    params += [EventKind.STARTED, now]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return _jobs_from_rows(cursor.fetchall())


def _start_attempts_sqlite(
    ids: list[uuid.UUID], now: datetime, worker_name: str, *, job_types: list[str] | None
) -> list[JobLog]:
    # The ORM's UPDATE, SELECT and bulk_create cost about 0.8 ms of query building per batch of a few jobs, most
    # of a pool worker's time on SQLite; these are the same two writes as plain statements, in one transaction.
    log, event = JobLog._meta.db_table, JobEvent._meta.db_table
    fields = JobLog._meta.concrete_fields
    quote = connection.ops.quote_name
    to_db_id = partial(JobLog._meta.get_field("id").get_db_prep_value, connection=connection)
    db_ids = [to_db_id(job_id) for job_id in ids]
    db_now = connection.ops.adapt_datetimefield_value(now)
    waiting = list(WAITING_STATUSES)
    of_types = "" if job_types is None else f"AND job_type IN ({', '.join(['%s'] * len(job_types))})"
    update = f"""
        UPDATE {quote(log)} SET status = %s, attempts = attempts + 1, started_at = %s, updated_at = %s,
            worker_name = %s, failed_items = '[]', failed_items_count = 0
        WHERE id IN ({", ".join(["%s"] * len(db_ids))}) AND status IN ({", ".join(["%s"] * len(waiting))}) {of_types}
        RETURNING {", ".join(quote(str(field.column)) for field in fields)}
    """
    with write_turn(), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(update, [JobStatus.RUNNING, db_now, db_now, worker_name, *db_ids, *waiting, *(job_types or [])])
        jobs = _jobs_from_rows(cursor.fetchall())
        if jobs:
            cursor.execute(
                f"INSERT INTO {quote(event)} (job_id, kind, status, attempt, message, data, created_at) VALUES "
                + ", ".join(["(%s, %s, %s, %s, '', '{}', %s)"] * len(jobs)),
                [
                    value
                    for job, db_id in zip(jobs, map(to_db_id, (job.pk for job in jobs)), strict=True)
                    for value in (db_id, EventKind.STARTED, JobStatus.RUNNING, job.attempts, db_now)
                ],
            )
    return jobs


def _jobs_from_rows(rows: list[tuple[Any, ...]]) -> list[JobLog]:
    """JobLog instances from rows of all its columns, in field order, converted as the ORM converts them (from_db,
    the backend's and each field's converters), without a RawQuerySet's per-query setup."""
    db = connections[connection.alias]  # looked up once, not through the django.db.connection proxy per value
    converters = _row_converters(db.alias)
    names = [field.attname for field in JobLog._meta.concrete_fields]
    jobs = []
    for row in rows:
        values = list(row)
        for index, converter, column in converters:
            values[index] = converter(values[index], column, db)
        jobs.append(JobLog.from_db(db.alias, names, values))
    return jobs


@functools.cache
def _row_converters(alias: str) -> list[tuple[int, Any, Any]]:
    # Worked out once per database: per call, they cost 70 us per row of a batch of four. The backends' converters
    # keep no per-connection state, so one thread's serve every thread.
    db = connections[alias]
    table = JobLog._meta.db_table
    return [
        (index, converter, column)
        for index, field in enumerate(JobLog._meta.concrete_fields)
        for column in [field.get_col(table)]
        for converter in db.ops.get_db_converters(column) + field.get_db_converters(db)
    ]


def _start_attempts_orm(
    ids: list[uuid.UUID], now: datetime, worker_name: str, *, job_types: Collection[str] | None = None
) -> list[JobLog]:
    waiting = JobLog.objects.filter(pk__in=ids, status__in=WAITING_STATUSES)
    with write_turn(), transaction.atomic():
        (waiting if job_types is None else waiting.filter(job_type__in=job_types)).update(
            status=JobStatus.RUNNING,
            attempts=F("attempts") + 1,
            started_at=now,
            worker_name=worker_name,
            failed_items=[],
            failed_items_count=0,
        )
        rows = list(
            JobLog.objects.filter(pk__in=ids, status=JobStatus.RUNNING, started_at=now, worker_name=worker_name)
        )
        JobEvent.objects.bulk_create(
            JobEvent(job=job, kind=EventKind.STARTED, status=JobStatus.RUNNING, attempt=job.attempts) for job in rows
        )
    return rows


def admit(job: JobLog) -> JobType | Retry | None:
    """May this waiting job start now? Its JobType if so; a Retry when a rate limit defers it (recorded);
    None when its type is not registered (recorded as a failure)."""
    try:
        job_type = registry.get(job.job_type)
    except UnknownJobType as exc:
        _fail(job, "UnknownJobType", str(exc), "", ctx=None)
        return None
    rate_limit = job_type.parsed_rate_limit
    if rate_limit is not None:
        wait = limits.acquire_start(job_type.name, rate_limit)
        if wait > 0:
            return _defer(job, wait, f"rate limit {job_type.rate_limit}")
    return job_type


@dataclass(frozen=True)
class Succeeded:
    """The handler returned this JSON result; nothing is written yet (the caller writes it, maybe in a batch)."""

    result: Any


def call_handler(
    job: JobLog, job_type: JobType, ctx: JobContext, guard: AttemptGuard
) -> tuple[Any, BaseException | None]:
    """Run the handler in this thread: (its result, None) or (None, what it raised)."""
    try:
        result = _call(job_type, ctx, job_type.clean(job.payload))
    except BaseException as exc:  # noqa: BLE001 - every failure is concluded, then rq sees it too
        guard.stop()
        return None, exc
    guard.stop()
    return result, None


def conclude(
    job: JobLog, job_type: JobType, ctx: JobContext, guard: AttemptGuard, result: Any, error: BaseException | None
) -> Succeeded | Retry | None:
    """Turn a finished handler call into its outcome. Every outcome but success is written here.

    Returns Succeeded (not written yet), a Retry for rq, or None (canceled: nothing more for rq to do); raises
    the handler's exception after recording a final failure, so rq records it too.
    """
    try:
        if error is None:
            try:
                result = _to_json(result)
            except ResultNotSerializable as exc:
                error = exc
        if isinstance(error, JobCanceled):
            _finish_canceled(job, ctx, result=None)
            return None
        if isinstance(error, WorkerShutdown):
            # rq puts the same job back on its queue at once; the worker then exits.
            return_to_queue(job, ctx)
            return Retry(max=UNBOUNDED_RETRIES, interval=[0])
        if error is not None:
            if guard.fired and ctx.is_canceled():
                _finish_canceled(job, ctx, result=None)
                return None
            return _handle_failure(job, job_type, ctx, error)
        if ctx.is_canceled():
            _finish_canceled(job, ctx, result=result)
            return None
        return Succeeded(result)
    finally:
        ctx.close()


class Success(Protocol):
    """An attempt whose handler succeeded, to be recorded: its row, its context, and its JSON result."""

    job: JobLog
    ctx: JobContext
    outcome: Any


@dataclass
class _Success:
    job: JobLog
    ctx: JobContext
    outcome: Any


def finish_succeeded(job: JobLog, ctx: JobContext, result: Any) -> None:
    # The pool worker's statement for a batch of one: on PostgreSQL one round trip instead of a transaction's four.
    record_successes([_Success(job, ctx, result)])


def record_successes(succeeded: Sequence[Success]) -> None:
    """Record these attempts as succeeded (``attempt.outcome`` holds each JSON result): one statement on
    PostgreSQL, one transaction elsewhere.

    Like every outcome write, each is conditional on the row still being in this attempt (running, same attempt
    count): a job the reconciler took over keeps its newer state.
    """
    if not succeeded:
        return
    now = timezone.now()
    if connection.vendor == "postgresql":
        written_ids = _record_successes_postgresql(succeeded, now)
    elif connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35):  # UPDATE ... RETURNING
        written_ids = _record_successes_sqlite(succeeded, now)
    else:
        written_ids = _record_successes_orm(succeeded, now)
    for attempt in succeeded:
        job = attempt.job
        if job.pk not in written_ids:
            _taken_over(job)
            continue
        job.status, job.finished_at, job.result, job.progress_percent = JobStatus.SUCCEEDED, now, attempt.outcome, 100
        attempt.ctx.publish_pending()  # the last progress goes out before the final status
        publish_status(job)


def _record_successes_postgresql(succeeded: Sequence[Success], now: datetime) -> set[uuid.UUID]:
    log, event = JobLog._meta.db_table, JobEvent._meta.db_table
    quote = connection.ops.quote_name
    rows: list[str] = []
    params: list[Any] = [JobStatus.SUCCEEDED, now, now]
    for attempt in succeeded:
        ctx = attempt.ctx
        rows.append("(%s::uuid, %s::integer, %s::jsonb, %s, %s, %s::jsonb, %s::jsonb, %s::integer)")
        params += [
            attempt.job.pk,
            attempt.job.attempts,
            None if attempt.outcome is None else _json_text(attempt.outcome),
            ctx.message,
            ctx.stage,
            _json_text(ctx.data),
            _json_text(ctx.failed_items),
            ctx.failed_items_count,
        ]
    params += [JobStatus.RUNNING, EventKind.SUCCEEDED, now]
    sql = f"""
        WITH done AS (
            UPDATE {quote(log)} AS job SET status = %s, finished_at = %s, updated_at = %s, result = v.result,
                progress_percent = 100, progress_message = v.message, progress_stage = v.stage,
                progress_data = v.data, failed_items = v.items, failed_items_count = v.items_count
            FROM (VALUES {", ".join(rows)}) AS v (id, attempts, result, message, stage, data, items, items_count)
            WHERE job.id = v.id AND job.status = %s AND job.attempts = v.attempts
            RETURNING job.id, job.status, job.attempts
        ), events AS (
            INSERT INTO {quote(event)} (job_id, kind, status, attempt, message, data, created_at)
            SELECT id, %s, status, attempts, '', '{{}}'::jsonb, %s FROM done
        )
        SELECT id FROM done
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] if isinstance(row[0], uuid.UUID) else uuid.UUID(str(row[0])) for row in cursor.fetchall()}


def _outcome_groups(succeeded: Sequence[Success]) -> list[tuple[dict[str, Any], int, list[uuid.UUID]]]:
    """The attempts by identical outcome (all no-op jobs share one, say): the fields to write, the attempt
    number the rows must still be in, and their ids. Each group is one UPDATE."""
    groups: dict[str, tuple[dict[str, Any], int, list[uuid.UUID]]] = {}
    for attempt in succeeded:
        fields = {**attempt.ctx.progress_fields(), "progress_percent": 100, "result": attempt.outcome}
        key = _json_text([attempt.job.attempts, fields])
        groups.setdefault(key, (fields, attempt.job.attempts, []))[2].append(attempt.job.pk)
    return list(groups.values())


_CONCRETE_FIELDS = {field.name: field for field in JobLog._meta.concrete_fields}


def _record_successes_sqlite(succeeded: Sequence[Success], now: datetime) -> set[uuid.UUID]:
    # As _record_successes_orm, in plain statements (see _start_attempts_sqlite): UPDATE ... RETURNING says which
    # rows were still in their attempt without a second query.
    log, event = JobLog._meta.db_table, JobEvent._meta.db_table
    quote = connection.ops.quote_name
    to_db_id = partial(JobLog._meta.get_field("id").get_db_prep_value, connection=connection)
    written: set[uuid.UUID] = set()
    with write_turn(), transaction.atomic(), connection.cursor() as cursor:
        for fields, attempt_number, ids in _outcome_groups(succeeded):
            values = {**fields, "status": JobStatus.SUCCEEDED, "finished_at": now, "updated_at": now}
            columns = [_CONCRETE_FIELDS[name] for name in values]
            cursor.execute(
                f"UPDATE {quote(log)} SET {', '.join(f'{quote(str(column.column))} = %s' for column in columns)} "
                f"WHERE id IN ({', '.join(['%s'] * len(ids))}) AND status = %s AND attempts = %s RETURNING id",
                [
                    *(
                        column.get_db_prep_save(value, connection)
                        for column, value in zip(columns, values.values(), strict=True)
                    ),
                    *map(to_db_id, ids),
                    JobStatus.RUNNING,
                    attempt_number,
                ],
            )
            written.update(uuid.UUID(str(row[0])) for row in cursor.fetchall())
        recorded = [attempt.job for attempt in succeeded if attempt.job.pk in written]
        if recorded:
            cursor.execute(
                f"INSERT INTO {quote(event)} (job_id, kind, status, attempt, message, data, created_at) VALUES "
                + ", ".join(["(%s, %s, %s, %s, '', '{}', %s)"] * len(recorded)),
                [
                    value
                    for job in recorded
                    for value in (
                        to_db_id(job.pk),
                        EventKind.SUCCEEDED,
                        JobStatus.SUCCEEDED,
                        job.attempts,
                        connection.ops.adapt_datetimefield_value(now),
                    )
                ],
            )
    return written


def _record_successes_orm(succeeded: Sequence[Success], now: datetime) -> set[uuid.UUID]:
    written: set[uuid.UUID] = set()
    with write_turn(), transaction.atomic():
        for fields, attempt_number, ids in _outcome_groups(succeeded):
            count = JobLog.objects.filter(pk__in=ids, status=JobStatus.RUNNING, attempts=attempt_number).update(
                status=JobStatus.SUCCEEDED, finished_at=now, **fields
            )
            if count == len(ids):
                written.update(ids)
            else:
                done = JobLog.objects.filter(pk__in=ids, status=JobStatus.SUCCEEDED, finished_at=now)
                written.update(done.values_list("pk", flat=True))
        JobEvent.objects.bulk_create(
            JobEvent(job=a.job, kind=EventKind.SUCCEEDED, status=JobStatus.SUCCEEDED, attempt=a.job.attempts)
            for a in succeeded
            if a.job.pk in written
        )
    return written


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, cls=DjangoJSONEncoder)


def _call(job_type: JobType, ctx: JobContext, payload: dict[str, Any]) -> Any:
    result = job_type.handler(ctx, payload)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


class ResultNotSerializable(Exception):
    """The handler returned something that is not JSON."""


def _to_json(result: Any) -> Any:
    try:
        return json.loads(json.dumps(result, cls=DjangoJSONEncoder))
    except (TypeError, ValueError) as exc:
        raise ResultNotSerializable(f"The handler's result is not JSON-serialisable: {exc}") from exc


def _handle_failure(job: JobLog, job_type: JobType, ctx: JobContext, exc: BaseException) -> Retry:
    error_type = "JobTimeout" if isinstance(exc, JobTimeoutException) else type(exc).__name__
    message = str(exc) or error_type
    if isinstance(exc, JobTimeoutException):
        message = f"The job ran longer than its timeout of {job_type.timeout} s."
    trace = "".join(tb.format_exception(exc))
    # A bad payload or result fails the same way every time: retrying it only wastes attempts.
    retryable = (
        isinstance(exc, Exception)
        and not isinstance(exc, InvalidPayload | ResultNotSerializable)
        and job_type.should_retry(exc)
    )
    used = job.attempts - job.attempts_before_retry
    if retryable and used < job.max_attempts:
        delay = job_type.backoff_delay(used)
        _schedule_retry(job, ctx, error_type, message, trace, delay)
        return Retry(max=UNBOUNDED_RETRIES, interval=[rq_interval(delay)])
    _fail(job, error_type, message, trace, ctx=ctx)
    if isinstance(exc, Exception):
        raise exc  # rq records the failure in its FailedJobRegistry, so rq tooling sees it too
    raise RuntimeError(message) from exc


def _schedule_retry(job: JobLog, ctx: JobContext, error_type: str, message: str, trace: str, delay: float) -> None:
    run_at = timezone.now() + timedelta(seconds=delay)
    with transaction.atomic():
        if not _this_attempt(job).update(
            status=JobStatus.SCHEDULED,
            run_at=run_at,
            error_type=error_type,
            error_message=message,
            traceback=trace,
            **ctx.progress_fields(),
        ):
            return _taken_over(job)
        JobEvent.objects.create(
            job=job,
            kind=EventKind.RETRY_SCHEDULED,
            status=JobStatus.SCHEDULED,
            attempt=job.attempts,
            message=message,
            data={"error_type": error_type, "traceback": trace, "delay": round(delay, 3), "run_at": run_at.isoformat()},
        )
    job.status, job.error_type, job.error_message = JobStatus.SCHEDULED, error_type, message
    publish_status(job)


def _fail(job: JobLog, error_type: str, message: str, trace: str, ctx: JobContext | None) -> None:
    _finish(
        job,
        JobStatus.FAILED,
        EventKind.FAILED,
        ctx,
        error_type=error_type,
        error_message=message,
        traceback=trace,
        event_message=message,
        event_data={"error_type": error_type, "traceback": trace},
    )


def _finish_canceled(job: JobLog, ctx: JobContext, result: Any) -> None:
    _finish(job, JobStatus.CANCELED, EventKind.CANCELED, ctx, result=result)


def _finish(
    job: JobLog,
    status: str,
    kind: str,
    ctx: JobContext | None,
    *,
    event_message: str = "",
    event_data: dict[str, Any] | None = None,
    **fields: Any,
) -> None:
    now = timezone.now()
    progress = ctx.progress_fields() if ctx is not None else {}
    with write_turn(), transaction.atomic():
        if not _this_attempt(job).update(status=status, finished_at=now, **{**progress, **fields}):
            return _taken_over(job)
        JobEvent.objects.create(
            job=job, kind=kind, status=status, attempt=job.attempts, message=event_message, data=event_data or {}
        )
    job.status, job.finished_at = status, now
    for name, value in fields.items():
        setattr(job, name, value)
    if ctx is not None:
        ctx.publish_pending()  # the last progress goes out before the final status
    publish_status(job)


def _this_attempt(job: JobLog) -> Any:
    """The row, only while it is still in the state this process last saw (its attempt, its status).

    The reconciler may have taken a job over (its liveness key lapsed) and handed it to another worker; then
    this process's late outcome must not overwrite the newer attempt's.
    """
    return JobLog.objects.filter(pk=job.pk, status=job.status, attempts=job.attempts)


def _taken_over(job: JobLog) -> None:
    logger.warning("Job %s: the outcome of attempt %s was discarded; the job was taken over.", job.id, job.attempts)


def _defer(job: JobLog, wait: float, reason: str) -> Retry:
    """Put the job back until a limit frees up; no attempt is spent."""
    run_at = timezone.now() + timedelta(seconds=wait)
    with transaction.atomic():
        JobLog.objects.filter(pk=job.pk, status=job.status).update(status=JobStatus.SCHEDULED, run_at=run_at)
        # One timeline entry per waiting spell, not one per deferral: a busy limit would flood the timeline.
        last = JobEvent.objects.filter(job=job).order_by("-created_at", "-id").values_list("kind", flat=True).first()
        if last != EventKind.DEFERRED:
            JobEvent.objects.create(
                job=job, kind=EventKind.DEFERRED, status=JobStatus.SCHEDULED, attempt=job.attempts, message=reason
            )
    job.status, job.run_at = JobStatus.SCHEDULED, run_at
    publish_status(job)
    return Retry(max=UNBOUNDED_RETRIES, interval=[max(1, rq_interval(wait))])


def rq_interval(delay: float) -> int:
    """Whole seconds to hand rq so that the job is not due before ``delay`` has passed.

    rq adds the interval to its clock and truncates to the second, which can cut up to a second off.
    """
    if delay <= 0:
        return 0
    now = time.time()
    return math.ceil(delay + (now - math.floor(now)))


def _worker_name() -> str:
    rq_job = get_current_job()
    return (getattr(rq_job, "worker_name", None) or f"{socket.gethostname()}.{os.getpid()}")[:200]


class Interrupter(Protocol):
    def raise_in_handler(self, exc_type: type[BaseException]) -> None: ...

    def clear(self) -> None: ...


class ThreadInterrupter:
    """Interrupts a handler running in a thread by raising an exception inside that thread."""

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id

    def raise_in_handler(self, exc_type: type[BaseException]) -> None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id), ctypes.py_object(exc_type))

    def clear(self) -> None:
        # The async exception may still be pending; clear it so it cannot hit the runner's own code.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id), None)


class AttemptGuard:
    """Cancel requests, progress flushes and (optionally) the timeout of one running handler.

    It owns no thread: a watcher calls tick() a few times a second, one watcher per attempt (AttemptWatcher) or
    one for every attempt of a process (the pool worker). On a cancel request it first tells the handler
    (ctx.is_canceled()); a handler still running CANCEL_GRACE seconds later gets JobCanceled raised inside it;
    one blocked in C (a long sleep, a socket read) never sees that, so in a forked horse, after another grace
    period, rq's stop-job command has the worker kill the horse (the worker's failure hook then records the job
    as canceled). A SimpleWorker cannot be stopped that way without killing the worker itself. With a
    ``deadline`` (time.monotonic()), a handler still running then gets rq's JobTimeoutException.
    """

    def __init__(self, ctx: JobContext, interrupter: Interrupter, deadline: float | None = None) -> None:
        self.ctx = ctx
        self.interrupter = interrupter
        self.deadline = deadline
        self.fired = False
        self._done = False  # the handler returned: no more interrupts
        self._lock = threading.Lock()
        self._canceled_at: float | None = None
        self._stop_sent = False
        settings = jobs_settings()
        self._grace = settings.CANCEL_GRACE
        self._publish_every = settings.PROGRESS_PUBLISH_INTERVAL

    @property
    def done(self) -> bool:
        return self._done

    def tick(self, now: float, cancel_requested: bool) -> None:
        """Look after the handler once; ``cancel_requested``: whether Redis holds a cancel request for it."""
        if self._done:
            return
        # A handler that went quiet after a burst still gets its latest progress out.
        self.ctx.publish_pending(older_than=self._publish_every)
        if self._canceled_at is None and cancel_requested:
            self._canceled_at = now
            self.ctx.mark_canceled()
        if self.deadline is not None and now >= self.deadline:
            self.interrupt(JobTimeoutException)
            return
        if self._canceled_at is None:
            return
        if not self.fired and now - self._canceled_at >= self._grace:
            self.interrupt(JobCanceled)
        elif self.fired and not self._stop_sent and in_work_horse and now - self._canceled_at >= 2 * self._grace:
            self._stop_sent = True
            logger.warning("Job %s ignored its cancellation; stopping its work horse", self.ctx.job_id)
            try:
                send_stop_job_command(queues.get_connection(), self.ctx.job_id, serializer=JSONSerializer)
            except Exception:  # noqa: BLE001
                logger.exception("Could not stop the work horse of job %s", self.ctx.job_id)

    def interrupt(self, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` inside the handler if it is still running; True if it was."""
        with self._lock:
            if self._done or self.fired:
                return False
            self.fired = True
            self.interrupter.raise_in_handler(exc_type)
            return True

    def stop(self) -> None:
        """The handler is done: never interrupt it again."""
        with self._lock:
            self._done = True
            if self.fired:
                self.interrupter.clear()


class AttemptWatcher(threading.Thread):
    """One thread per attempt (fork and simple workers): beats its liveness key and ticks its guard."""

    def __init__(self, guard: AttemptGuard) -> None:
        super().__init__(name=f"jobs-watch-{guard.ctx.job_id[:8]}", daemon=True)
        self.guard = guard
        self.ctx = guard.ctx
        self._closed = threading.Event()  # the outcome is written: no more beats
        settings = jobs_settings()
        self._poll = settings.CANCEL_POLL_INTERVAL
        self._beat_every = settings.HEARTBEAT_INTERVAL

    def run(self) -> None:
        next_beat = 0.0
        while not self._closed.wait(self._poll):
            now = time.monotonic()
            try:
                if now >= next_beat:
                    # The reconciler takes a running job whose liveness key lapsed for a lost one.
                    queues.beat(self.ctx.job_id, self._beat_every * 3)
                    next_beat = now + self._beat_every
                if self.guard.done:
                    continue
                self.guard.tick(now, queues.cancel_requested(self.ctx.job_id))
            except RedisError:
                # Redis away: the job runs on; cancel requests and beats resume when it is back.
                logger.warning("Job %s: Redis unavailable to its watcher", self.ctx.job_id, exc_info=True)

    def interrupt(self, exc_type: type[BaseException]) -> bool:
        return self.guard.interrupt(exc_type)

    def close(self) -> None:
        self.guard.stop()
        self._closed.set()


def return_to_queue(job: JobLog, ctx: JobContext | None = None) -> None:
    """Hand a running job back (worker shutting down): not a failure, and the attempt does not count."""
    with transaction.atomic():
        if not JobLog.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
            status=JobStatus.QUEUED,
            attempts=max(0, job.attempts - 1),
            started_at=None,
            enqueued_at=timezone.now(),  # back at the tail of its list: the reconciler reasons with this order
            **(ctx.progress_fields() if ctx is not None else {}),
        ):
            return
        JobEvent.objects.create(
            job=job,
            kind=EventKind.INTERRUPTED,
            status=JobStatus.QUEUED,
            attempt=job.attempts,
            message="The worker shut down before the job finished; it went back to its queue.",
        )
    job.status, job.attempts = JobStatus.QUEUED, max(0, job.attempts - 1)
    publish_status(job)


def requeue_after_shutdown(job_id: str) -> None:
    """The worker killed this job's horse at the end of its shutdown grace: queue the job again."""
    job = JobLog.objects.filter(pk=job_id, status=JobStatus.RUNNING).first()
    if job is None:
        return
    return_to_queue(job)
    JobLog.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(status=JobStatus.PENDING)
    job.status = JobStatus.PENDING
    queues.requeue(job)


def recover_lost_attempt(job_id: str, reason: str) -> None:
    """The work horse died under a running job (killed, out of memory, stopped): retry, cancel or fail it."""
    job = JobLog.objects.filter(pk=job_id, status=JobStatus.RUNNING).first()
    if job is None:
        return
    if job.cancel_requested_at is not None:
        _finish(job, JobStatus.CANCELED, EventKind.CANCELED, None, event_message=reason)
        return
    try:
        job_type = registry.get(job.job_type)
    except UnknownJobType as exc:
        _fail(job, "UnknownJobType", str(exc), "", ctx=None)
        return
    used = job.attempts - job.attempts_before_retry
    if used < job.max_attempts:
        delay = job_type.backoff_delay(used)
        run_at = timezone.now() + timedelta(seconds=delay)
        with transaction.atomic():
            JobLog.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
                status=JobStatus.PENDING, run_at=run_at, error_type="WorkerLost", error_message=reason
            )
            JobEvent.objects.create(
                job=job,
                kind=EventKind.RETRY_SCHEDULED,
                status=JobStatus.SCHEDULED,
                attempt=job.attempts,
                message=reason,
                data={"error_type": "WorkerLost", "delay": round(delay, 3)},
            )
        job.refresh_from_db()
        queues.requeue(job)
        return
    _fail(job, "WorkerLost", reason, "", ctx=None)
