"""The pool worker's SQL: start many attempts in one transaction, and record many successes in one.

The per-job runner (jobs.runner.run_job) starts each job with runner.start_attempts and writes a transaction at the end
of every job. A pool worker claims jobs in batches, so it starts a whole batch with that one statement (an UPDATE and a
multi-row INSERT of their events), and writes the successes that finished together with one UPDATE per distinct outcome
(no-op jobs all share one) and one INSERT. Every rarer outcome (failure, retry, cancel, deferral) goes through the
runner's own functions.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone
from rq.job import Retry

from . import registry, runner
from .models import WAITING_STATUSES, EventKind, JobEvent, JobLog, JobStatus
from .progress import JobContext, publish_status
from .queues import Claim
from .registry import JobType
from .sqlite_writes import write_turn

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Attempt:
    """One started attempt in a pool worker: its claim in rq, its row, and what its handler did."""

    claim: Claim
    job: JobLog
    job_type: JobType
    ctx: JobContext
    guard: runner.AttemptGuard | None = None
    result: Any = None
    error: BaseException | None = None
    outcome: Any = field(default=None)
    dispatched_at: float = 0.0  # time.monotonic() when it was handed to a thread or the event loop


def start_many(claims: Sequence[Claim], worker_name: str) -> tuple[list[Attempt], list[tuple[Claim, Retry | None]]]:
    """Start the claimed jobs that still wait: one statement on PostgreSQL, one transaction elsewhere.

    Returns the attempts to run, and the claims not to run with what rq should do about each: a Retry (a rate
    limit deferred it) or None (nothing more to do: no row, canceled meanwhile, a duplicate delivery, or an
    unregistered type, recorded as failed).
    """
    skipped: list[tuple[Claim, Retry | None]] = []
    plain: list[Claim] = []
    checked: list[Claim] = []
    for claim in claims:
        job_type = registry.find(claim.job_type)
        (plain if job_type is not None and job_type.parsed_rate_limit is None else checked).append(claim)
    if checked:
        # The rare ones (a rate limit to take, or a type the description does not name): the runner's own checks.
        rows = JobLog.objects.in_bulk([uuid.UUID(claim.job_id) for claim in checked])
        for claim in checked:
            job = rows.get(uuid.UUID(claim.job_id))
            decision = runner.admit(job) if job is not None and job.status in WAITING_STATUSES else None
            if isinstance(decision, JobType):
                plain.append(claim)
            else:
                skipped.append((claim, decision))
    if not plain:
        return [], skipped

    now = timezone.now()
    ids = [uuid.UUID(claim.job_id) for claim in plain]
    # Conditional on each job still waiting (any waiting status: see start_attempts): a cancel in between wins, and a
    # duplicate delivery of a job that already ran is never run twice.
    started = {str(job.pk): job for job in runner.start_attempts(ids, now, worker_name[:200])}
    attempts = []
    for claim in plain:
        job = started.get(claim.job_id)
        job_type = registry.find(job.job_type) if job is not None else None
        if job is None or job_type is None:
            skipped.append((claim, None))
            continue
        publish_status(job)
        attempts.append(Attempt(claim, job, job_type, JobContext(job, job.attempts)))
    return attempts, skipped


def finish_succeeded_many(succeeded: Sequence[Attempt]) -> None:
    """Record these attempts as succeeded (``attempt.outcome`` holds each JSON result): one statement on
    PostgreSQL, one transaction elsewhere.

    Like every outcome write, each is conditional on the row still being in this attempt (running, same attempt
    count): a job the reconciler took over keeps its newer state.
    """
    if not succeeded:
        return
    now = timezone.now()
    if connection.vendor == "postgresql":
        written_ids = _finish_postgresql(succeeded, now)
    elif connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35):  # UPDATE ... RETURNING
        written_ids = _finish_sqlite(succeeded, now)
    else:
        written_ids = _finish_orm(succeeded, now)
    for attempt in succeeded:
        job = attempt.job
        if job.pk not in written_ids:
            logger.warning(
                "Job %s: the outcome of attempt %s was discarded; the job was taken over.", job.pk, job.attempts
            )
            continue
        job.status, job.finished_at, job.result, job.progress_percent = JobStatus.SUCCEEDED, now, attempt.outcome, 100
        attempt.ctx.publish_pending()  # the last progress goes out before the final status
        publish_status(job)


def _finish_postgresql(succeeded: Sequence[Attempt], now: datetime) -> set[uuid.UUID]:
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
            None if attempt.outcome is None else _json(attempt.outcome),
            ctx.message,
            ctx.stage,
            _json(ctx.data),
            _json(ctx.failed_items),
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


def _outcome_groups(succeeded: Sequence[Attempt]) -> list[tuple[dict[str, Any], int, list[uuid.UUID]]]:
    """The attempts by identical outcome (all no-op jobs share one, say): the fields to write, the attempt
    number the rows must still be in, and their ids. Each group is one UPDATE."""
    groups: dict[str, tuple[dict[str, Any], int, list[uuid.UUID]]] = {}
    for attempt in succeeded:
        fields = {**attempt.ctx.progress_fields(), "progress_percent": 100, "result": attempt.outcome}
        key = _json([attempt.job.attempts, fields])
        groups.setdefault(key, (fields, attempt.job.attempts, []))[2].append(attempt.job.pk)
    return list(groups.values())


_CONCRETE_FIELDS = {field.name: field for field in JobLog._meta.concrete_fields}


def _finish_sqlite(succeeded: Sequence[Attempt], now: datetime) -> set[uuid.UUID]:
    # As _finish_orm, in plain statements (see runner._start_attempts_sqlite): UPDATE ... RETURNING says which
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


def _finish_orm(succeeded: Sequence[Attempt], now: datetime) -> set[uuid.UUID]:
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


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, cls=DjangoJSONEncoder)
