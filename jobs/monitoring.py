"""Read-only views of the system for the API, the admin and health checks: queue stats and health."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from django.db import connection
from django.db.models import Count, FloatField, Func, Min, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import registry, rollup
from .models import TERMINAL_STATUSES, WAITING_STATUSES, FinishedJobCount, JobLog, JobStatus, PausedQueue
from .transport import queues as transport
from .transport import workers as live_workers
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
        workers = live_workers.workers_by_queue()
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


def get_finished_per_day(queue_names: Iterable[str], *, now: datetime | None = None) -> FinishedSeries:
    """Jobs succeeded and failed per day (UTC) over the week: today and the six days before."""
    now = (now or timezone.now()).astimezone(UTC)
    last = rollup.week_start(now) + timedelta(days=rollup.WEEK_DAYS - 1)  # as far back as the rollup backfills
    return _finished_series(list(queue_names), last, timedelta(days=1), rollup.WEEK_DAYS)


def _finished_series(names: list[str], last: datetime, step: timedelta, buckets: int) -> FinishedSeries:
    """Succeeded and failed per ``step`` from ``last - step * (buckets - 1)``: the rollup up to where it has counted,
    JobLog live from there (the current minute, and whatever the scheduler has not rolled up yet)."""
    first = last - step * (buckets - 1)
    end = first + step * buckets
    series: FinishedSeries = {
        "start": first.isoformat(),
        "step_seconds": int(step.total_seconds()),
        "succeeded": [0] * buckets,
        "failed": [0] * buckets,
    }

    def add(bucket: datetime, status: str, n: int) -> None:
        index = (bucket.astimezone(UTC) - first) // step
        if 0 <= index < buckets:
            series[status][index] += n  # type: ignore[literal-required]

    until = rollup.rolled_up_until()
    live_from = first if until is None else max(first, until)
    if live_from > first:
        # Minute or hour rows, by the bucket-first unique index: a week is a few thousand rows, whatever the history.
        rolled = (
            FinishedJobCount.objects.filter(queue__in=names, bucket__gte=first, bucket__lt=min(live_from, end))
            .values("bucket", "status")
            .annotate(n=Sum("count"))
            .order_by()
        )
        for row in rolled:
            add(row["bucket"], row["status"], row["n"])
    # The rest from JobLog: one index range (queue, finished_at, status) read once, each bucket and status a filtered
    # count of it: no date function, index-only. A bucket or two once the rollup has caught up (more after idle
    # minutes, which have no rows to read), the whole chart on a fresh install.
    lows = [first + step * index for index in range(max(0, (live_from - first) // step), buckets)]
    if lows:
        counts = {
            f"{status}_{index}": Count(
                "finished_at", filter=Q(status=status, finished_at__gte=max(low, live_from), finished_at__lt=low + step)
            )
            for index, low in enumerate(lows)
            for status in rollup.COUNTED
        }
        live = JobLog.objects.filter(
            queue__in=names, finished_at__gte=live_from, finished_at__lt=end, status__in=rollup.COUNTED
        ).aggregate(**counts)
        for index, low in enumerate(lows):
            for status in rollup.COUNTED:
                add(low, status, live[f"{status}_{index}"])
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
        worker_count = live_workers.count_workers()
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


# Wait and run times: percentiles from a bounded sample --------------------------------------------------------------

# Rows read per queue: the newest finished jobs of the last day, and of each of the last seven days. Each read is one
# range of the (queue, finished_at, status) index, newest first, stopped at the cap: the cost does not grow with the
# table, only with the number of queues. Percentiles are computed here, the same way on every database.
TIMING_SAMPLE_PER_QUEUE = 500
TIMING_SAMPLE_PER_QUEUE_DAY = 100
TIMING_DAYS = 7


class TimingStats(TypedDict):
    label: str  # a job type, or a day (YYYY-MM-DD, UTC)
    sampled: int  # finished jobs the percentiles come from
    wait_p50: float | None  # seconds from ready (enqueued, or its run_at if later) to started
    wait_p95: float | None
    run_p50: float | None  # seconds from started to finished
    run_p95: float | None


class Timings(TypedDict):
    since: str  # ISO 8601: the start of the per-type window
    per_type: list[TimingStats]
    per_day: list[TimingStats]
    week: FinishedSeries  # succeeded and failed per day, counted (not sampled)
    sample_per_queue: int
    sample_per_queue_day: int


def get_timings(queue_names: Iterable[str], *, now: datetime | None = None) -> Timings:
    """Wait and run time p50/p95 per job type over the last 24 hours and per day over the last week (sampled: the
    newest finished jobs of each queue), and the week's succeeded and failed counts per day."""
    names = list(queue_names)
    now = (now or timezone.now()).astimezone(UTC)
    since = now - timedelta(hours=24)
    by_type: dict[str, list[tuple[float, float]]] = {}
    for job_type, durations in _sample(names, since, now, TIMING_SAMPLE_PER_QUEUE):
        by_type.setdefault(job_type, []).append(durations)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    days = [today - timedelta(days=n) for n in range(TIMING_DAYS - 1, -1, -1)]
    per_day = []
    for day in days:
        sample = [d for _t, d in _sample(names, day, min(now, day + timedelta(days=1)), TIMING_SAMPLE_PER_QUEUE_DAY)]
        per_day.append(_timing_stats(day.date().isoformat(), sample))
    return {
        "since": since.isoformat(),
        "per_type": [_timing_stats(name, by_type[name]) for name in sorted(by_type)],
        "per_day": per_day,
        "week": get_finished_per_day(names, now=now),
        "sample_per_queue": TIMING_SAMPLE_PER_QUEUE,
        "sample_per_queue_day": TIMING_SAMPLE_PER_QUEUE_DAY,
    }


class Epoch(Func):
    """A datetime as seconds since 1970 (a float), computed by the database: the sample's rows need no datetimes."""

    arity = 1
    output_field = FloatField()
    template = "EXTRACT(EPOCH FROM %(expressions)s)::double precision"  # PostgreSQL

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Django stores UTC text ("YYYY-MM-DD HH:MM:SS.ffffff"); julianday() reads it in C, to well under a ms.
        return self.as_sql(
            compiler, connection, template="((julianday(%(expressions)s) - 2440587.5) * 86400.0)", **extra
        )


def _sample(names: list[str], start: datetime, end: datetime, cap: int) -> Iterable[tuple[str, tuple[float, float]]]:
    """(job type, (wait, run) in seconds) of the newest ``cap`` jobs of each queue that finished in [start, end)."""
    for name in names:
        # One queue at a time: queue = %s lets the index deliver rows newest first, so LIMIT stops the scan.
        rows = (
            JobLog.objects.filter(
                queue=name,
                finished_at__gte=start,
                finished_at__lt=end,
                status__in=(JobStatus.SUCCEEDED, JobStatus.FAILED),
                started_at__isnull=False,  # never ran (e.g. given up while waiting): no wait or run time
            )
            .order_by("-finished_at")
            .values_list(
                "job_type",
                Epoch(Coalesce("enqueued_at", "created_at")),
                Epoch("run_at"),
                Epoch("started_at"),
                Epoch("finished_at"),
            )[:cap]
        )
        for job_type, enqueued, run_at, started, finished in rows:
            # A delayed job waits for its run_at by design: its wait starts then.
            ready = enqueued if run_at is None else max(enqueued, run_at)
            yield job_type, (max(0.0, started - ready), max(0.0, finished - started))


def _timing_stats(label: str, sample: list[tuple[float, float]]) -> TimingStats:
    waits = sorted(w for w, _r in sample)
    runs = sorted(r for _w, r in sample)
    return {
        "label": label,
        "sampled": len(sample),
        "wait_p50": percentile(waits, 50),
        "wait_p95": percentile(waits, 95),
        "run_p50": percentile(runs, 50),
        "run_p95": percentile(runs, 95),
    }


def percentile(ordered: list[float], p: float) -> float | None:
    """The nearest-rank percentile of an ordered list (None when it is empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return round(ordered[rank - 1], 3)
