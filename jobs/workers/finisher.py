"""A worker process's finisher: one thread that records what its handlers did.

Whatever finished together is recorded together: the successes in one statement (jobs.lifecycle.succeed) and one
Redis round trip, every rarer outcome (failure, retry, cancel, return to queue) one by one, then rq's side of each
claim. What cannot be recorded (the database is away) stays running in SQL; its liveness lapses and the reconciler
takes the job over.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

from django.db import close_old_connections, connections

from .. import lifecycle
from ..transport.queues import Claim
from ..transport.worker import Registration
from . import runner
from .runner import Attempt, Outcome

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RedisCaller(Protocol):
    """Calls ``call()``, waiting out a Redis outage (WorkerProcess._wait_for_redis)."""

    def __call__(self, call: Callable[[], T]) -> T: ...


class Finisher(threading.Thread):
    """Records the attempts put() here; ``on_recorded`` hears of each batch once it is done with it."""

    def __init__(
        self,
        registration: Registration,
        wait_for_redis: RedisCaller,
        on_recorded: Callable[[list[Attempt]], None],
    ) -> None:
        super().__init__(name="jobs-finish", daemon=True)
        self._registration = registration
        self._wait_for_redis = wait_for_redis
        self._on_recorded = on_recorded
        self._finished: queue.SimpleQueue[Attempt | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # held while a batch is recorded
        self._taken_over = False

    def put(self, attempt: Attempt) -> None:
        self._finished.put(attempt)

    def close(self) -> None:
        """Record what is left, then stop."""
        self._finished.put(None)
        self.join(timeout=10)

    @contextmanager
    def taken_over(self) -> Iterator[list[Attempt] | None]:
        """For a process that ends itself: waits for the batch being recorded, then stops this thread and hands
        over the attempts it has not recorded yet (None if it was taken over before)."""
        with self._lock:
            if self._taken_over:
                yield None
                return
            self._taken_over = True
            yield self._drain()

    def run(self) -> None:
        try:
            while (first := self._finished.get()) is not None:
                batch = [first, *self._drain()]  # whatever else finished meanwhile, in the same statement
                with self._lock:
                    if self._taken_over:
                        return  # the process records what is left itself
                    self.record(batch)
        finally:
            connections.close_all()  # this thread's

    def _drain(self) -> list[Attempt]:
        batch: list[Attempt] = []
        while True:
            try:
                attempt = self._finished.get_nowait()
            except queue.Empty:
                return batch
            if attempt is None:
                self._finished.put(None)  # the stop stays in line for run()
                return batch
            batch.append(attempt)

    def record(self, batch: list[Attempt]) -> None:
        try:
            close_old_connections()
            outcomes = [self._conclude(attempt) for attempt in batch]
            succeeded = [(a, o) for a, o in zip(batch, outcomes, strict=True) if isinstance(o, runner.Succeeded)]
            lifecycle.succeed([lifecycle.Success(a.job, a.ctx.progress_fields(), o.result) for a, o in succeeded])
            self.settle(
                [
                    (a.claim, None if isinstance(o, runner.Succeeded) else o, int(a.job_type.retention.total_seconds()))
                    for a, o in zip(batch, outcomes, strict=True)
                ]
            )
        except Exception:  # noqa: BLE001 - the reconciler repairs what could not be recorded
            logger.exception("Could not record the outcome of %d job(s)", len(batch))
        finally:
            # Whatever the outcome, these handlers no longer run: their owners' per-user slots are free again.
            runner.release_user_slots([s for a in batch if (s := runner.user_slot(a.job, a.job_type)) is not None])
            self._on_recorded(batch)

    def _conclude(self, attempt: Attempt) -> Outcome:
        try:
            return runner.conclude(attempt)
        except Exception:  # noqa: BLE001 - the attempt stays running in SQL; its liveness lapses, the reconciler
            logger.exception("Job %s: could not record its outcome", attempt.ctx.job_id)
            return runner.Failed("The worker could not record this job's outcome.")

    def settle(self, outcomes: list[tuple[Claim, Outcome, int]]) -> None:
        """rq's side of finished claims: (claim, outcome, result TTL); None is a plain success."""
        plain: list[tuple[Claim, int]] = []
        registration = self._registration
        for claim, outcome, ttl in outcomes:
            if isinstance(outcome, runner.RetryIn):
                self._wait_for_redis(lambda c=claim, o=outcome: registration.retry(c, o.seconds))  # type: ignore[misc]
            elif isinstance(outcome, runner.Failed):
                self._wait_for_redis(lambda c=claim, o=outcome: registration.fail(c, o.exc_string))  # type: ignore[misc]
            elif claim.rate_limited:
                self._wait_for_redis(lambda c=claim: registration.succeed(c))  # type: ignore[misc]
            else:
                plain.append((claim, ttl))
        self._wait_for_redis(lambda: registration.finish(plain))
