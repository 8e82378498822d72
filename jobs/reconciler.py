"""Repair divergence between SQL (the truth) and Redis (the transport): nothing accepted is ever lost."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from . import lifecycle
from .conf import jobs_settings
from .models import JobLog, JobStatus, PausedQueue
from .transport import queues as transport
from .transport import workers as live_workers
from .transport.connections import get_connection

logger = logging.getLogger(__name__)

BATCH = 500
MAX_PAGES = 100  # at most 50,000 rows of one kind per pass, so a pass always ends


@dataclass
class ReconcileReport:
    pushed_pending: list[str] = field(default_factory=list)
    repushed_missing: list[str] = field(default_factory=list)
    released_overdue: list[str] = field(default_factory=list)
    recovered_running: list[str] = field(default_factory=list)
    # Queue pauses copied from SQL to Redis (paused again after a wipe, or resumed): not job repairs, not in total.
    pauses_restored: list[str] = field(default_factory=list)
    dead_workers_removed: list[str] = field(default_factory=list)  # rq registrations of workers that stopped beating
    resent_cancels: int = 0  # running jobs whose cancel request was sent to their workers again
    skipped: bool = False  # another reconciler holds the lock

    @property
    def total(self) -> int:
        return (
            len(self.pushed_pending)
            + len(self.repushed_missing)
            + len(self.released_overdue)
            + len(self.recovered_running)
        )


def reconcile(*, grace: float | None = None, confirm_after: float | None = None) -> ReconcileReport:
    """One repair pass, under a Redis lock so several schedulers never repair the same rows at once.

    - pending rows older than ``grace`` (the on-commit push failed, e.g. Redis was down) are pushed;
    - queued/scheduled rows whose rq job is gone from Redis (Redis restarted or wiped), or that rq gave up on
      (a worker killed between dequeue and start: rq fails such a job as abandoned), or that a worker popped
      off its list and died with before rq recorded anything, are pushed again;
    - scheduled rows overdue by more than ``grace`` are queued now (rq's scheduler lock was held by a worker
      that died, and no other worker may take it over until the lock expires);
    - running rows whose attempt stopped beating (worker killed) are retried or failed;
    - Redis's paused queues are made SQL's again (a wipe or a restart without data forgot them);
    - rq's registrations of workers whose beat lapsed (killed) are removed, so no list shows them.
    """
    settings = jobs_settings()
    grace = settings.RECONCILE_GRACE if grace is None else grace
    confirm_after = settings.HEARTBEAT_INTERVAL * 3 if confirm_after is None else confirm_after
    report = ReconcileReport()
    conn = get_connection()
    lock = conn.lock(f"{settings.QUEUE_PREFIX}:reconcile:lock", timeout=300, blocking=False)
    if not lock.acquire():
        report.skipped = True
        return report
    try:
        _restore_pauses(report)
        report.dead_workers_removed += live_workers.forget_dead_workers()
        cutoff = timezone.now() - timedelta(seconds=grace)
        _push_pending(cutoff, report)
        _repush_missing(cutoff, report)
        _repush_dropped(cutoff, report)
        _release_overdue(cutoff, report)
        _recover_running(cutoff, confirm_after, report)
        _resend_cancel_marks(report)
    finally:
        try:
            lock.release()
        except Exception:  # noqa: BLE001 - it expires on its own
            pass
    if report.total:
        logger.warning(
            "Reconciled: %d pending pushed, %d missing re-pushed, %d overdue released, %d lost attempts recovered",
            len(report.pushed_pending),
            len(report.repushed_missing),
            len(report.released_overdue),
            len(report.recovered_running),
        )
    if report.dead_workers_removed:
        logger.warning("Removed dead workers from rq's registry: %s", ", ".join(report.dead_workers_removed))
    if report.pauses_restored:
        logger.warning("Reconciled queue pauses with SQL: %s", ", ".join(report.pauses_restored))
    return report


def _restore_pauses(report: ReconcileReport) -> None:
    # First, before any job is pushed again: after a wipe, a paused queue's jobs must not be taken meanwhile.
    paused, resumed = transport.set_paused_queues(PausedQueue.objects.values_list("name", flat=True))
    report.pauses_restored += [f"{name} paused" for name in sorted(paused)]
    report.pauses_restored += [f"{name} resumed" for name in sorted(resumed)]


def _push_pending(cutoff: datetime, report: ReconcileReport) -> None:
    # Every overdue pending row, a page at a time; the first Redis error ends the pass (the next one goes on).
    # A pushed row is no longer pending, so each page is simply the oldest BATCH still waiting.
    pending = JobLog.objects.filter(status=JobStatus.PENDING, updated_at__lt=cutoff).order_by("created_at", "id")
    for _ in range(MAX_PAGES):
        page = list(pending[:BATCH])
        report.pushed_pending += [str(job.id) for job in lifecycle.repush(page)]
        if len(page) < BATCH:
            return


def _repush_missing(cutoff: datetime, report: ReconcileReport) -> None:
    waiting = JobLog.objects.filter(status__in=(JobStatus.QUEUED, JobStatus.SCHEDULED), updated_at__lt=cutoff)
    last_pk = None
    for _ in range(MAX_PAGES):
        # Keyset pages on the primary key: each page is one bounded query, and no row is skipped or seen twice.
        page = list((waiting.filter(pk__gt=last_pk) if last_pk else waiting).order_by("pk")[:BATCH])
        if not page:
            return
        last_pk = page[-1].pk
        present = transport.which_waiting_in_redis([str(job.id) for job in page])
        missing = [job for job in page if str(job.id) not in present]
        report.repushed_missing += [str(job.id) for job in lifecycle.repush(missing)]
        if len(page) < BATCH:
            return


def _repush_dropped(cutoff: datetime, report: ReconcileReport) -> None:
    """Queued jobs a worker popped off their list and died with before it started them.

    rq then keeps no trace of them but a hash still saying "queued" (or "started", with a lapsed liveness key, for
    a worker's claim). Lists are FIFO, so a row enqueued before
    the job now at the head of its list (or any overdue row, when the list is empty) was taken and dropped.
    """
    queued = JobLog.objects.filter(status=JobStatus.QUEUED, enqueued_at__lt=cutoff)
    for queue_name, priority in queued.values_list("queue", "priority").distinct().order_by():
        rows = queued.filter(queue=queue_name, priority=priority)
        head = transport.queue_head(queue_name, priority)
        if head is not None:
            head_enqueued_at = JobLog.objects.filter(pk=head).values_list("enqueued_at", flat=True).first()
            if head_enqueued_at is None:
                continue  # a head SQL does not know: no order to reason with
            rows = rows.filter(enqueued_at__lt=head_enqueued_at - timedelta(seconds=1))
        page = list(rows.order_by("enqueued_at")[:BATCH])
        states = transport.rq_states([str(job.id) for job in page])
        # A worker marks a job started in rq when it claims it, and sets its liveness key in the same step: a
        # claim whose key lapsed while SQL still says queued belongs to a worker that died before starting it.
        claimed = [job_id for job_id, state in states.items() if state == "started"]
        abandoned = set(claimed) - transport.which_alive(claimed) if claimed else set()
        # Anything else is running, scheduled, waiting for a concurrency slot, or handled by _repush_missing.
        dropped = [job for job in page if states[str(job.id)] == "queued" or str(job.id) in abandoned]
        report.repushed_missing += [str(job.id) for job in lifecycle.repush(dropped)]


def _release_overdue(cutoff: datetime, report: ReconcileReport) -> None:
    overdue = list(JobLog.objects.filter(status=JobStatus.SCHEDULED, run_at__lt=cutoff).order_by("run_at")[:BATCH])
    # Dropped from rq's scheduled registry and queued at once.
    report.released_overdue += [str(job.id) for job in lifecycle.repush(overdue, run_now=True)]


def _recover_running(cutoff: datetime, confirm_after: float, report: ReconcileReport) -> None:
    """Every running row, a keyset page on the primary key at a time (bounded memory, no row skipped however many
    run); the rows whose liveness key is missing are confirmed lost after one more beat period, all at once."""
    running = JobLog.objects.filter(status=JobStatus.RUNNING, started_at__lt=cutoff).order_by("pk")
    suspects: list[str] = []
    last_pk = None
    for _ in range(MAX_PAGES):
        pks = list((running.filter(pk__gt=last_pk) if last_pk else running).values_list("pk", flat=True)[:BATCH])
        if not pks:
            break
        last_pk = pks[-1]
        page = [str(pk) for pk in pks]
        suspects += sorted(set(page) - transport.which_alive(page))
        if len(pks) < BATCH:
            break
    if not suspects:
        return
    # A live attempt refreshes its key every HEARTBEAT_INTERVAL; after a Redis restart the key is briefly
    # missing for jobs that are fine. Only a key still missing after a full beat period means a lost attempt.
    time.sleep(confirm_after)
    still_missing: set[str] = set()
    for start in range(0, len(suspects), BATCH):
        chunk = suspects[start : start + BATCH]
        still_missing |= set(chunk) - transport.which_alive(chunk)
    for job_id in sorted(still_missing):
        lifecycle.lost(job_id, "The worker running this job stopped responding (lost or killed).")
        report.recovered_running.append(job_id)


def _resend_cancel_marks(report: ReconcileReport) -> None:
    """Running jobs with a cancel request: their marks again. A request made while Redis was away is recorded in
    SQL only, and one Redis lost (restarted empty) is gone; either way the worker has not heard it. A mark already
    there is only renewed."""
    asked = JobLog.objects.filter(status=JobStatus.RUNNING, cancel_requested_at__isnull=False)
    report.resent_cancels = lifecycle.send_cancel_marks(list(asked.order_by("cancel_requested_at")[:BATCH]))
