"""One attempt of one job: may it start, call its handler, and turn what the handler did into its outcome.

The process (workers.process) decides when and where; this module decides what happens to the job, through
jobs.lifecycle, and tells the process what rq must do with the claim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from .. import lifecycle, registry
from ..exceptions import InvalidPayload, JobCanceled, JobTimeout, WorkerLost, WorkerShutdown
from ..live.context import JobContext
from ..models import JobLog
from ..registry import JobType
from ..transport import limits
from ..transport import queues as transport
from ..transport.connections import TransportError
from ..transport.queues import Claim
from .guard import AttemptGuard

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Attempt:
    """One started attempt: its claim in rq, its row, and what its handler did."""

    claim: Claim
    job: JobLog
    job_type: JobType
    ctx: JobContext
    guard: AttemptGuard | None = None
    result: Any = None
    error: BaseException | None = None
    dispatched_at: float = field(default=0.0)  # time.monotonic() when it was handed to a slot


# What rq must do with a claim once its attempt is concluded (None: mark it finished, nothing more).
@dataclass(frozen=True)
class Succeeded:
    result: Any  # recorded with others that finished together (lifecycle.succeed)


@dataclass(frozen=True)
class RetryIn:
    seconds: float  # 0: back on its queue at once


@dataclass(frozen=True)
class Failed:
    exc_string: str  # for rq's failed registry


Outcome = Succeeded | RetryIn | Failed | None


def run_job(job_id: str) -> None:
    """The function rq's tooling names for every job (transport.queues.RUNNER). These jobs run in jobs_worker
    only; an rq worker started on their queues by mistake fails each one with this message (the reconciler pushes
    them again for jobs_worker)."""
    raise RuntimeError(f"Job {job_id} runs in `manage.py jobs_worker`, not in an rq worker.")


# How soon a job kept waiting by its owner's per-user cap looks for a free slot again. A slot frees when a job
# ends, which no waiting job hears of: it polls, and each deferral costs a row update, not a timeline entry.
USER_SLOT_RETRY_SECONDS = 1.0


def admit(job: JobLog) -> JobType | RetryIn | None:
    """May this claimed, waiting job start now? Its JobType if so (holding its owner's slot when the type has a
    per-user cap); a RetryIn when a per-user cap or a rate limit defers it (recorded); None when its type is not
    registered (recorded as a failure)."""
    job_type = registry.find(job.job_type)
    if job_type is None:
        lifecycle.fail(job, lifecycle.Error("UnknownJobType", f"There is no job type named {job.job_type!r}."))
        return None
    slot = user_slot(job, job_type)
    # Before the rate limit: a start taken from it by a job that then waits for its owner's slot would be wasted.
    if slot is not None and not limits.take_user_slot(*slot, job_type.per_user_concurrency or 0):
        lifecycle.defer(job, USER_SLOT_RETRY_SECONDS, f"per-user concurrency {job_type.per_user_concurrency}")
        return RetryIn(USER_SLOT_RETRY_SECONDS)
    limit = job_type.parsed_rate_limit
    if limit is not None:
        wait = transport.acquire_start(job_type.name, limit.count, limit.period_seconds)
        if wait > 0:
            if slot is not None:
                limits.release_user_slots([slot])
            lifecycle.defer(job, wait, f"rate limit {job_type.rate_limit}")
            return RetryIn(max(1.0, wait))
    return job_type


def user_slot(job: JobLog, job_type: JobType) -> tuple[str, str, str] | None:
    """The (type, owner, job id) slot this job holds while it runs, when its type caps each owner; else None."""
    if job_type.per_user_concurrency is None or job.owner_id is None:
        return None  # ownerless jobs (the system's) are not capped
    return (job_type.name, str(job.owner_id), str(job.pk))


def release_user_slots(slots: list[tuple[str, str, str]]) -> None:
    """Free per-user slots of jobs that ended or never started. Best effort: a slot not freed here frees itself
    once its job's liveness key lapses."""
    if not slots:
        return
    try:
        limits.release_user_slots(slots)
    except TransportError:
        logger.warning("Could not free %d per-user slot(s); they free themselves shortly", len(slots))


def call_handler(attempt: Attempt, guard: AttemptGuard) -> None:
    """Run a sync handler in this thread, keeping its result or what it raised on the attempt."""
    try:
        attempt.result = attempt.job_type.handler(attempt.ctx, attempt.job_type.clean(attempt.job.payload))
    except BaseException as exc:  # noqa: BLE001 - every failure is concluded, whatever it is
        attempt.error = exc
    finally:
        guard.stop()


async def call_async_handler(attempt: Attempt, guard: AttemptGuard, payload: dict[str, Any]) -> None:
    """Await an ``async def`` handler on the process's event loop; an interrupt cancels its task."""
    try:
        attempt.result = await attempt.job_type.handler(attempt.ctx, payload)
    except asyncio.CancelledError:
        attempt.error = (guard.interrupted_with or WorkerShutdown)()
    except BaseException as exc:  # noqa: BLE001
        attempt.error = exc
    finally:
        guard.stop()


def conclude(attempt: Attempt) -> Outcome:
    """Record every outcome but a success (which the caller records in a batch), and say what rq must do."""
    job, ctx, error, result = attempt.job, attempt.ctx, attempt.error, attempt.result
    try:
        if error is None:
            try:
                result = to_json(result)
            except ResultNotSerializable as exc:
                error = exc
        progress = ctx.progress_fields()
        ctx.publish_pending()  # the last progress goes out before the final status
        if isinstance(error, WorkerShutdown):
            lifecycle.return_to_queue(job, progress)
            return RetryIn(0)
        # Asked to stop, it stopped: canceled, whatever it raised on its way out (a retry would undo the cancel).
        if isinstance(error, JobCanceled) or ctx.is_canceled():
            lifecycle.cancel_running(job, progress, result if error is None else None)
            return None
        if error is not None:
            return failure(attempt, error, progress)
        return Succeeded(result)
    finally:
        ctx.close()


def failure(attempt: Attempt, exc: BaseException, progress: dict[str, Any]) -> RetryIn | Failed:
    """A failed attempt: another one after the type's backoff while attempts are left and the error may be
    retried, else the job fails."""
    job, job_type = attempt.job, attempt.job_type
    trace = "".join(traceback.format_exception(exc))
    if isinstance(exc, ReportedFailure):
        error = lifecycle.Error(exc.type_name, exc.message, exc.trace)
        retryable = exc.retryable
    elif isinstance(exc, JobTimeout):
        error = lifecycle.Error("JobTimeout", f"The job ran longer than its timeout of {job_type.timeout} s.", trace)
        retryable = job_type.should_retry(exc)
    else:
        error = lifecycle.Error(type(exc).__name__, str(exc) or type(exc).__name__, trace)
        # A bad payload or result fails the same way every time: retrying it only wastes attempts.
        retryable = isinstance(exc, WorkerLost) or (
            isinstance(exc, Exception)
            and not isinstance(exc, InvalidPayload | ResultNotSerializable)
            and job_type.should_retry(exc)
        )
    used = job.attempts - job.attempts_before_retry
    if retryable and used < job.max_attempts:
        delay = job_type.backoff_delay(used)
        lifecycle.retry_later(job, error, delay, progress)
        return RetryIn(delay)
    lifecycle.fail(job, error, progress)
    return Failed(error.traceback or error.message)


class ReportedFailure(Exception):
    """A handler's failure as an isolated child reported it (the exception itself stayed in the child)."""

    def __init__(self, type_name: str, message: str, trace: str, retryable: bool) -> None:
        super().__init__(message)
        self.type_name, self.message, self.trace, self.retryable = type_name, message, trace, retryable


class ResultNotSerializable(Exception):
    """The handler returned something that is not JSON."""


def to_json(result: Any) -> Any:
    try:
        return json.loads(json.dumps(result, cls=DjangoJSONEncoder))
    except (TypeError, ValueError) as exc:
        raise ResultNotSerializable(f"The handler's result is not JSON-serialisable: {exc}") from exc
