"""The one PostgreSQL fast path of jobs.lifecycle: a batch of attempts started, or succeeded, in one statement.

Each is a data-modifying CTE (the rows' UPDATE and their events' INSERT), so one round trip and its own implicit
transaction instead of the ORM's BEGIN, SELECT ... FOR UPDATE, UPDATE, INSERT and COMMIT. Both write exactly what
the ORM path writes (tests/integration/test_lifecycle.py compares them); bench/lifecycle_ab.py measures both.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, connections

from ..models import WAITING_STATUSES, EventKind, JobEvent, JobLog, JobStatus

# The start commits without waiting for its WAL flush (synchronous_commit off for this one transaction;
# set_config(..., true) ends with it). What it guards is small: only a crash of the database server itself within
# a fraction of a second can lose a start, and then the row still says queued, so the job runs again (at least
# once, as after a worker crash), never lost. The next durable commit flushes the WAL past it: every job that
# finished was also durably started. Inside a caller's transaction the setting would reach the caller's own
# writes, so there the start stays durable.
_ASYNC_COMMIT = "AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"


def start(ids: Sequence[uuid.UUID], now: datetime, worker_name: str, *, job_types: list[str] | None) -> list[JobLog]:
    log, event = JobLog._meta.db_table, JobEvent._meta.db_table
    quote = connection.ops.quote_name
    relaxed = "" if connection.in_atomic_block else _ASYNC_COMMIT
    of_types = "" if job_types is None else "AND job_type = ANY(%s::varchar[])"
    sql = f"""
        WITH started AS (
            UPDATE {quote(log)} SET status = %s, attempts = attempts + 1, started_at = %s, updated_at = %s,
                worker_name = %s, failed_items = '[]'::jsonb, failed_items_count = 0
            WHERE id = ANY(%s::uuid[]) AND status = ANY(%s::varchar[]) {of_types} {relaxed}
            RETURNING {", ".join(quote(str(field.column)) for field in JobLog._meta.concrete_fields)}
        ), events AS (
            INSERT INTO {quote(event)} (job_id, kind, status, attempt, message, data, created_at)
            SELECT id, %s, status, attempts, '', '{{}}'::jsonb, %s FROM started
        )
        SELECT * FROM started
    """
    params: list[Any] = [JobStatus.RUNNING, now, now, worker_name, list(ids), list(WAITING_STATUSES)]
    params += [] if job_types is None else [job_types]
    params += [EventKind.STARTED, now]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return _jobs_from_rows(cursor.fetchall())


def succeed(jobs: Sequence[JobLog], now: datetime) -> set[uuid.UUID]:
    """``jobs`` carry their result and last progress; each is written only while still running the same attempt."""
    log, event = JobLog._meta.db_table, JobEvent._meta.db_table
    quote = connection.ops.quote_name
    rows: list[str] = []
    params: list[Any] = [JobStatus.SUCCEEDED, now, now]
    for job in jobs:
        rows.append("(%s::uuid, %s::integer, %s::jsonb, %s, %s, %s::jsonb, %s::jsonb, %s::integer)")
        params += [
            job.pk,
            job.attempts,
            None if job.result is None else _json_text(job.result),
            job.progress_message,
            job.progress_stage,
            _json_text(job.progress_data),
            _json_text(job.failed_items),
            job.failed_items_count,
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


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, cls=DjangoJSONEncoder)


def _jobs_from_rows(rows: list[tuple[Any, ...]]) -> list[JobLog]:
    """JobLog instances from rows of all its columns in field order, converted as the ORM converts them."""
    db = connections[connection.alias]
    names = [field.attname for field in JobLog._meta.concrete_fields]
    jobs = []
    for row in rows:
        values = list(row)
        for index, converter, column in _row_converters(db.alias):
            values[index] = converter(values[index], column, db)
        jobs.append(JobLog.from_db(db.alias, names, values))
    return jobs


@functools.cache
def _row_converters(alias: str) -> list[tuple[int, Any, Any]]:
    # Worked out once per database alias: the backends' converters keep no per-connection state.
    db = connections[alias]
    table = JobLog._meta.db_table
    return [
        (index, converter, column)
        for index, field in enumerate(JobLog._meta.concrete_fields)
        for column in [field.get_col(table)]
        for converter in db.ops.get_db_converters(column) + field.get_db_converters(db)
    ]
