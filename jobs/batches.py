"""The pool worker's start: many claimed attempts started in SQL with one statement.

The per-job runner (jobs.runner.run_job) starts one job with runner.start_attempts; a pool worker claims jobs in
batches, so it starts a whole batch with that same statement (an UPDATE and a multi-row INSERT of their events). The
successes that finish together are recorded with runner.record_successes, the statement the per-job runner uses for
one; every rarer outcome (failure, retry, cancel, deferral) goes through the runner's own functions.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone
from rq.job import Retry

from . import registry, runner
from .models import WAITING_STATUSES, JobLog
from .progress import JobContext, publish_status
from .queues import Claim
from .registry import JobType

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
