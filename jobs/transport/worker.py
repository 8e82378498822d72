"""rq's view of the engine: each worker process's registration, rq's bookkeeping of its claims, and rq's scheduler.

The engine runs its own loop (jobs.workers); what rq's tooling reads stays rq's: the worker hashes and their
heartbeats, the registries a claim moves through, and the scheduled registries that rq's scheduler empties.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rq import Queue, worker_registration
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job, Retry
from rq.registry import StartedJobRegistry, clean_registries
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.suspension import is_suspended
from rq.worker import SimpleWorker, WorkerStatus

from ..conf import jobs_settings
from .connections import get_connection
from .queues import Claim, alive_key, finish_claims
from .workers import beat_worker, forget_worker_beat

logger = logging.getLogger(__name__)

REGISTRATION_CHECK_SECONDS = 10.0
# rq counts Retry results against Retry.max; the engine keeps the budget in SQL, so rq's never binds.
UNBOUNDED_RETRIES = 10**9


def worker_beat_ttl() -> float:
    """How long a worker process's beat lasts: three heartbeats, like a running job's liveness key."""
    return jobs_settings().HEARTBEAT_INTERVAL * 3


class Registration:
    """One worker process as rq sees it: registered, beating, busy or idle, and settling its claims."""

    def __init__(self, rq_queue_names: Sequence[str], name: str) -> None:
        conn = get_connection()
        queues = [Queue(q, connection=conn, serializer=JSONSerializer) for q in rq_queue_names]
        # rq's worker raises the shared client's socket timeout to above its own dequeue wait (minutes), for every
        # caller of this client. The engine never lets rq dequeue (its blocking claim has a client of its own):
        # the configured timeout is put back.
        kwargs = conn.connection_pool.connection_kwargs
        timeout = kwargs.get("socket_timeout")
        self._worker = SimpleWorker(queues, name=name, connection=conn, serializer=JSONSerializer)
        kwargs["socket_timeout"] = timeout
        self._checked_at = 0.0

    @property
    def name(self) -> str:
        return str(self._worker.name)

    @property
    def key(self) -> str:
        return str(self._worker.key)

    def register(self) -> None:
        # The beat first: a registration without one is a dead worker's, which the reconciler removes.
        self.beat()
        self._worker.register_birth()  # type: ignore[no-untyped-call]
        self._worker.set_state(WorkerStatus.STARTED)

    def unregister(self) -> None:
        self._worker.register_death()  # type: ignore[no-untyped-call]
        forget_worker_beat(self.name)

    def beat(self) -> None:
        """Say this process lives for a few heartbeats: health, the queue list and the reconciler go by this, not by
        rq's registration, which outlives a killed process by minutes."""
        beat_worker(self.name, worker_beat_ttl())

    def heartbeat(self) -> None:
        """Keep the registration alive; register again if Redis lost it (restarted with its data gone)."""
        self._worker.heartbeat()
        now = time.monotonic()
        if now - self._checked_at >= REGISTRATION_CHECK_SECONDS:
            self._checked_at = now
            conn = self._worker.connection
            if not conn.sismember(worker_registration.REDIS_WORKER_KEYS, self.key):
                logger.warning("Worker registration lost (Redis restarted?); registering again")
                conn.delete(self.key)
                self.register()

    def set_busy(self, busy: bool) -> None:
        self._worker.set_state(WorkerStatus.BUSY if busy else WorkerStatus.IDLE)

    def suspended(self) -> bool:
        """Whether ``rq suspend`` asked every worker to stop taking jobs."""
        return bool(is_suspended(self._worker.connection))

    def finish(self, succeeded: Sequence[tuple[Claim, int]]) -> None:
        """Plain successes (no concurrency slot to free), each with its result TTL, in one round trip."""
        finish_claims(succeeded, self.key)

    def retry(self, claim: Claim, seconds: float) -> None:
        """rq puts the claimed job back: on its queue now, or in its scheduled registry for later."""
        self._settle(
            claim,
            lambda job, queue, started, execution: self._worker.handle_job_retry(
                job, queue, Retry(max=UNBOUNDED_RETRIES, interval=[whole_seconds(seconds)]), started, execution
            ),
        )

    def fail(self, claim: Claim, exc_string: str) -> None:
        """rq records the claimed job as failed (its FailedJobRegistry), so rq's tooling sees the failure too."""
        self._settle(
            claim,
            lambda job, queue, started, execution: self._worker.handle_job_failure(
                job, queue, started, exc_string=exc_string, execution=execution
            ),
        )

    def succeed(self, claim: Claim) -> None:
        """rq's own success handling, which also frees the job's concurrency slot."""
        self._settle(
            claim,
            lambda job, queue, started, execution: self._worker.handle_job_success(job, queue, started, execution),
        )

    def _settle(self, claim: Claim, handle: Any) -> None:
        conn = self._worker.connection
        try:
            job = Job.fetch(claim.job_id, connection=conn, serializer=JSONSerializer)
        except NoSuchJobError:
            return  # deleted meanwhile: nothing left to record in rq
        queue = Queue(claim.queue_name, connection=conn, serializer=JSONSerializer)
        job.started_at = datetime.fromtimestamp(claim.started_at, UTC)
        job.ended_at = datetime.now(UTC)
        started = StartedJobRegistry(claim.queue_name, connection=conn, serializer=JSONSerializer)
        execution = Execution(claim.execution_id, claim.job_id, connection=conn, worker_name=self.name)
        execution.created_at = datetime.fromtimestamp(claim.started_at, UTC)
        handle(job, queue, started, execution)
        conn.delete(alive_key(claim.job_id))


def whole_seconds(delay: float) -> int:
    """Whole seconds to hand rq so that the job is not due before ``delay`` has passed: rq adds the interval to
    its clock and truncates to the second, which can cut up to a second off."""
    if delay <= 0:
        return 0
    now = time.time()
    return math.ceil(delay + (now - math.floor(now)))


class DelayedJobs:
    """rq's scheduler, run in the caller's loop: moves due jobs (delays, retries after backoff) from rq's scheduled
    registries onto their queues. One host at a time holds each queue's lock; the others keep trying, so a lock
    left by a killed holder is taken over once it expires."""

    RETRY_LOCKS_SECONDS = 10.0

    def __init__(self, rq_queue_names: Sequence[str]) -> None:
        conn = get_connection()
        queues = [Queue(q, connection=conn, serializer=JSONSerializer) for q in rq_queue_names]
        self._scheduler = RQScheduler(queues, connection=conn, serializer=JSONSerializer, logging_level="WARNING")
        self._names = set(rq_queue_names)
        self._tried_at = -math.inf
        self._born = False

    def tick(self) -> None:
        """Move what is due now (and take any free lock first)."""
        scheduler = self._scheduler
        if scheduler.acquired_locks != self._names and time.monotonic() - self._tried_at >= self.RETRY_LOCKS_SECONDS:
            self._tried_at = time.monotonic()
            scheduler.acquire_locks()  # type: ignore[no-untyped-call]
            if scheduler.acquired_locks and not self._born:
                scheduler.register_birth()
                self._born = True
        if scheduler.acquired_locks:
            scheduler.heartbeat()  # type: ignore[no-untyped-call]
            scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._scheduler.release_locks()  # type: ignore[no-untyped-call]
        if self._born:
            self._scheduler.register_death()
        self._scheduler.connection.connection_pool.disconnect()


def clean(rq_queue_names: Sequence[str]) -> None:
    """rq's registry maintenance: expired entries leave the started, finished, failed and other registries."""
    # The supervisor of every worker host runs this every half minute: routine, so only at DEBUG.
    logger.debug("Cleaning registries for %d queues: %s", len(rq_queue_names), ", ".join(rq_queue_names))
    conn = get_connection()
    for name in rq_queue_names:
        clean_registries(Queue(name, connection=conn, serializer=JSONSerializer))
