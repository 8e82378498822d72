"""Finished-job counts rolled up per minute and hour (FinishedJobCount), so the dashboard's charts read a table that
does not grow with history. The scheduler calls roll_up() beside the reconciler; the charts add what is newer than
the rollup (rolled_up_until()) counted live from JobLog, so they are right even before the first roll-up.

Every roll-up recounts whole buckets from JobLog and replaces them: running it twice, or from two schedulers at once,
writes the same counts again, never a double count. It starts a little before where the last one stopped (MARGIN) so
a job whose row was committed a moment after a bucket was counted is counted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Count
from django.db.models.functions import TruncHour, TruncMinute
from django.utils import timezone

from . import registry
from .models import FinishedJobCount, JobLog, JobStatus, RollupMark

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
# Recounted every time behind the newest bucket: a finish committed this late after its finished_at is still counted.
MARGIN = timedelta(minutes=2)
# The charts' longest reach is the week chart: today and the six days before it. A first run backfills that much.
WEEK_DAYS = 7
# Rows older than this are deleted: a day more than the week chart reads.
KEEP = timedelta(days=8)
# Minute rows of an hour that ended this long before the current hour started are merged into one row for the hour.
HOURLY_AFTER = HOUR
# Chunks (an hour each) counted per run: a first run's week of backfill is spread over several runs, so a scheduler
# tick is never held up long; the charts count what is not rolled up yet live meanwhile.
MAX_CHUNKS = 24
COUNTED = (JobStatus.SUCCEEDED, JobStatus.FAILED)
KEY = ["bucket", "queue", "job_type", "status"]
MARK = "finished"  # RollupMark.name


@dataclass
class RollupReport:
    chunks_counted: int = 0  # chunks (an hour each, or the minutes of the current hour) counted from JobLog
    rows_written: int = 0
    rows_merged: int = 0  # minute rows merged into hourly ones
    rows_pruned: int = 0
    caught_up: bool = True  # False: MAX_CHUNKS reached; the next run goes on from there


def queue_names() -> list[str]:
    """The queues the charts show: those of the registered job types."""
    return sorted({t.queue for t in registry.all_types()})


def rolled_up_until() -> datetime | None:
    """Where the rollup stops: JobLog rows that finished from then on are not in it yet (None: nothing rolled up)."""
    return RollupMark.objects.filter(name=MARK).values_list("until", flat=True).first()


def week_start(now: datetime) -> datetime:
    """Midnight UTC of the week chart's first day."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=WEEK_DAYS - 1)


def hourly_before(now: datetime) -> datetime:
    """Hours that end by then are kept as one row per hour: the per-minute chart (the last 60 minutes) never reaches
    them, whatever the minute."""
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - HOURLY_AFTER


def roll_up(*, now: datetime | None = None, max_chunks: int = MAX_CHUNKS) -> RollupReport:
    """Count the completed minutes since the last roll-up (at most a week back), merge old minutes into hours, and
    prune rows past KEEP. Bounded by the jobs finished since the last run, not by the table."""
    now = (now or timezone.now()).astimezone(UTC)
    report = RollupReport()
    names = queue_names()
    current_minute = now.replace(second=0, microsecond=0)  # still open: counted live by the charts
    hours_end = hourly_before(now)
    until = rolled_up_until()
    start = week_start(now) if until is None else max(week_start(now), until - MARGIN)
    while start < current_minute:
        if report.chunks_counted >= max_chunks:
            report.caught_up = False
            break
        hour = start.replace(minute=0)
        if hour + HOUR <= hours_end:
            # One hour, one row per key: also replaces any minute rows left in it.
            low, high, minutes = hour, hour + HOUR, 60
        else:
            low, high, minutes = start, min(hour + HOUR, current_minute), 1
        report.rows_written += _recount(names, low, high, minutes)
        report.chunks_counted += 1
        start = high
    report.rows_merged = _merge_into_hours(hours_end)
    report.rows_pruned, _ = FinishedJobCount.objects.filter(bucket__lt=now - KEEP).delete()
    return report


def _recount(names: list[str], low: datetime, high: datetime, minutes: int) -> int:
    """Replace the rollup's rows in [low, high) by a fresh count from JobLog, per bucket of ``minutes``."""
    trunc = TruncMinute if minutes == 1 else TruncHour
    # queue IN (...) and a finished_at range: one range of the (queue, finished_at, status) index per queue.
    rows = (
        JobLog.objects.filter(queue__in=names, finished_at__gte=low, finished_at__lt=high, status__in=COUNTED)
        .annotate(bucket=trunc("finished_at", tzinfo=UTC))
        .values("bucket", "queue", "job_type", "status")
        .annotate(n=Count("*"))
        .order_by()
    )
    counts = [
        FinishedJobCount(
            bucket=row["bucket"].astimezone(UTC),
            minutes=minutes,
            queue=row["queue"],
            job_type=row["job_type"],
            status=row["status"],
            count=row["n"],
        )
        for row in rows
    ]
    # Counted before the transaction: it only writes, so SQLite's write lock is held for a moment. Delete, then
    # insert: a bucket whose jobs were retried since is emptied. update_conflicts: another scheduler that wrote the
    # same bucket meanwhile is overwritten with the same count, not added to.
    with transaction.atomic():
        FinishedJobCount.objects.filter(bucket__gte=low, bucket__lt=high).delete()
        FinishedJobCount.objects.bulk_create(
            counts, update_conflicts=True, unique_fields=KEY, update_fields=["minutes", "count"]
        )
        # With the counts it covers. Two schedulers may set it back and forth: either value has been counted up to.
        RollupMark.objects.bulk_create(
            [RollupMark(name=MARK, until=high)], update_conflicts=True, unique_fields=["name"], update_fields=["until"]
        )
    return len(counts)


def _merge_into_hours(hours_end: datetime) -> int:
    """Merge the minute rows of hours that ended by ``hours_end`` (within a day of it) into one row per hour."""
    old_minutes = FinishedJobCount.objects.filter(
        minutes=1, bucket__gte=hours_end - timedelta(days=1), bucket__lt=hours_end
    )
    minute_rows = list(old_minutes.values_list(*KEY, "count"))
    if not minute_rows:
        return 0
    sums: dict[tuple[datetime, str, str, str], int] = {}
    for bucket, queue, job_type, status, count in minute_rows:
        key = (bucket.astimezone(UTC).replace(minute=0), queue, job_type, status)
        sums[key] = sums.get(key, 0) + count
    hours = [
        FinishedJobCount(bucket=bucket, minutes=60, queue=queue, job_type=job_type, status=status, count=count)
        for (bucket, queue, job_type, status), count in sums.items()
    ]
    with transaction.atomic():
        old_minutes.delete()  # by range, not by id: no limit on how many
        # An hour's minute rows are all merged at once, so its sum is the whole hour: set, never added.
        FinishedJobCount.objects.bulk_create(
            hours, update_conflicts=True, unique_fields=KEY, update_fields=["minutes", "count"]
        )
    return len(minute_rows)
