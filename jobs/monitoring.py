"""Read-only views of the system for the API, the admin and health checks: queue stats and health."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from django.db import connection
from django.db.models import Count, Min, Q
from django.db.models.functions import TruncHour, TruncMinute
from django.utils import timezone

from . import registry
from .models import TERMINAL_STATUSES, WAITING_STATUSES, JobLog, JobStatus, PausedQueue
from .transport import queues as transport
from .transport.connections import TransportError
from .types import PRIORITIES

logger = logging.getLogger(__name__)


class QueueStats(TypedDict):
    name: str
    job_types: list[str]
    paused: bool
    counts: dict[str, int]
    waiting_in_redis: dict[str, int]
    workers: list[dict[str, Any]]
    throughput: dict[str, int]


class Health(TypedDict):
    status: str
    database: bool
    redis: bool
    workers: int
    queue_depth: int
    oldest_waiting_seconds: float | None


def list_queue_stats(*, by_priority: dict[str, dict[str, dict[str, int]]] | None = None) -> list[QueueStats]:
    """Per job queue: counts by status (SQL), paused state, Redis lengths, workers and throughput.

    ``by_priority`` (what count_by_priority() answered for every queue) saves counting the table a second time.
    """
    types_by_queue: dict[str, list[str]] = {}
    for job_type in registry.all_types():
        types_by_queue.setdefault(job_type.queue, []).append(job_type.name)
    counts: dict[str, dict[str, int]] = {name: dict.fromkeys(JobStatus.values, 0) for name in types_by_queue}
    if by_priority is not None:
        for name, levels in by_priority.items():
            for level in levels.values():
                for status, n in level.items():
                    if name in counts:
                        counts[name][status] += n
    else:
        # COUNT(*), not COUNT(id): every column it needs is in the (queue, status, priority) index, read alone.
        rows = JobLog.objects.filter(queue__in=types_by_queue).values("queue", "status").annotate(n=Count("*"))
        for row in rows:
            counts[row["queue"]][row["status"]] = row["n"]
    now = timezone.now()
    throughput: dict[str, dict[str, int]] = {name: {"last_minute": 0, "last_hour": 0} for name in types_by_queue}
    finished = JobLog.objects.filter(
        queue__in=types_by_queue, status__in=TERMINAL_STATUSES, finished_at__gte=now - timedelta(hours=1)
    )
    for done in finished.values("queue").annotate(
        last_hour=Count("finished_at"),
        last_minute=Count("finished_at", filter=Q(finished_at__gte=now - timedelta(minutes=1))),
    ):
        throughput[done["queue"]] = {"last_minute": done["last_minute"], "last_hour": done["last_hour"]}
    paused = set(PausedQueue.objects.values_list("name", flat=True))  # SQL keeps pauses; Redis has a copy
    try:
        workers = transport.workers_by_queue()
        lengths = {name: transport.queue_lengths(name) for name in types_by_queue}
    except TransportError:
        logger.warning("Redis unavailable: queue stats without Redis details", exc_info=True)
        workers, lengths = {}, {}
    return [
        {
            "name": name,
            "job_types": sorted(type_names),
            "paused": name in paused,
            "counts": counts[name],
            "waiting_in_redis": lengths.get(name, {}),
            "workers": workers.get(name, []),
            "throughput": throughput[name],
        }
        for name, type_names in sorted(types_by_queue.items())
    ]


def count_by_priority(queue_names: Iterable[str]) -> dict[str, dict[str, dict[str, int]]]:
    """Per job queue, per priority level (strict order), per status: how many JobLog rows."""
    names = list(queue_names)
    counts: dict[str, dict[str, dict[str, int]]] = {
        name: {p: dict.fromkeys(JobStatus.values, 0) for p in PRIORITIES} for name in names
    }
    # In the order of the (queue, status, priority) index, and COUNT(*): an index-only scan, grouped as it reads.
    rows = JobLog.objects.filter(queue__in=names).values("queue", "status", "priority").annotate(n=Count("*"))
    for row in rows.order_by():
        if row["priority"] in counts[row["queue"]]:
            counts[row["queue"]][row["priority"]][row["status"]] = row["n"]
    return counts


class FinishedSeries(TypedDict):
    start: str  # ISO 8601, UTC: the first bucket
    step_seconds: int
    succeeded: list[int]
    failed: list[int]


def get_finished_series(queue_names: Iterable[str], *, now: datetime | None = None) -> dict[str, FinishedSeries]:
    """Jobs succeeded and failed per minute over the last hour ("hour") and per hour over the last day ("day")."""
    names = list(queue_names)
    now = (now or timezone.now()).astimezone(UTC)
    return {
        "hour": _finished_series(names, now.replace(second=0, microsecond=0), timedelta(minutes=1), 60),
        "day": _finished_series(names, now.replace(minute=0, second=0, microsecond=0), timedelta(hours=1), 24),
    }


def _finished_series(names: list[str], last: datetime, step: timedelta, buckets: int) -> FinishedSeries:
    first = last - step * (buckets - 1)
    trunc = TruncMinute if step == timedelta(minutes=1) else TruncHour
    # queue IN (...) lets the (queue, finished_at) index serve the range, one index scan per queue.
    rows = (
        JobLog.objects.filter(
            queue__in=names, finished_at__gte=first, status__in=(JobStatus.SUCCEEDED, JobStatus.FAILED)
        )
        .annotate(bucket=trunc("finished_at", tzinfo=UTC))
        .values("bucket", "status")
        .annotate(n=Count("*"))
        .order_by()
    )
    series: FinishedSeries = {
        "start": first.isoformat(),
        "step_seconds": int(step.total_seconds()),
        "succeeded": [0] * buckets,
        "failed": [0] * buckets,
    }
    for row in rows:
        index = int((row["bucket"].astimezone(UTC) - first) / step)
        if 0 <= index < buckets:
            series[row["status"]][index] += row["n"]  # type: ignore[literal-required]
    return series


def get_health() -> Health:
    """Degraded when the database or Redis is unreachable, or when no worker is alive."""
    database = redis_ok = False
    worker_count = 0
    depth = 0
    oldest: float | None = None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        waiting = JobLog.objects.filter(status__in=WAITING_STATUSES).aggregate(n=Count("id"), oldest=Min("created_at"))
        depth = waiting["n"]
        if waiting["oldest"] is not None:
            oldest = round((timezone.now() - waiting["oldest"]).total_seconds(), 3)
        database = True
    except Exception:  # noqa: BLE001 - any database failure means degraded, never a 500
        logger.warning("Health: database unreachable", exc_info=True)
    try:
        worker_count = transport.count_workers()
        redis_ok = True
    except Exception:  # noqa: BLE001
        logger.warning("Health: Redis unreachable", exc_info=True)
    healthy = database and redis_ok and worker_count > 0
    return {
        "status": "ok" if healthy else "degraded",
        "database": database,
        "redis": redis_ok,
        "workers": worker_count,
        "queue_depth": depth,
        "oldest_waiting_seconds": oldest,
    }
