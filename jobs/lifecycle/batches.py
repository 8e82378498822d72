"""The start and the success of a batch of attempts: the ORM's statements, or PostgreSQL's one each (postgresql.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from ..live.publish import publish_status
from ..models import WAITING_STATUSES, EventKind, JobEvent, JobLog, JobStatus
from . import postgresql
from .rows import taken_over


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
        jobs = postgresql.start(ids, now, worker_name, job_types=types)
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
        written = postgresql.succeed([success.job for success in done], now)
    else:
        written = _succeed_orm([success.job for success in done], now)
    for success in done:
        job = success.job
        if job.pk in written:
            job.status, job.finished_at, job.updated_at = JobStatus.SUCCEEDED, now, now
            publish_status(job)
        else:
            taken_over(job)
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
