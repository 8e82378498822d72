"""One worker process: claims jobs in batches, starts them, runs them in its slots and records what they did.

- It claims up to as many jobs as it has free slots in one round trip (strict priorities, paused queues skipped,
  each job's liveness key set) and starts them in SQL with one statement (jobs.lifecycle.start). While handlers
  are short it claims as many more and holds them started and ready, so a slot that frees up starts its next job
  at once (see _capacity).
- One watcher thread looks after every running handler (workers.guard); one finisher thread records whatever
  finished together: successes in one statement and one round trip, every rarer outcome one by one.
- SIGTERM: no more claims; running jobs get SHUTDOWN_GRACE seconds, then go back to their queues.
- A handler that no exception can stop (workers.guard) ends the process: the job it held is recorded as canceled
  or timed out, every other job it held goes back to its queue without spending an attempt, and the supervisor
  starts a fresh process.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import close_old_connections

from .. import lifecycle, registry
from ..conf import jobs_settings
from ..exceptions import WorkerShutdown
from ..live.context import JobContext
from ..live.publish import flush_published
from ..models import WAITING_STATUSES, JobLog
from ..registry import JobType
from ..transport import queues as transport
from ..transport.connections import TransportError, Unreachable
from ..transport.queues import Claim
from ..transport.worker import DelayedJobs, Registration
from ..types import PRIORITIES
from . import runner
from .finisher import Finisher
from .guard import AttemptGuard, ThreadInterrupter, Watcher
from .runner import Attempt, Outcome
from .slots import Slots

logger = logging.getLogger(__name__)

T = TypeVar("T")

IDLE_BLOCK_SECONDS = 1.0  # an idle process waits this long for a job: also how soon it notices a stop or a resume
WORKER_HEARTBEAT_SECONDS = 10.0
SUSPENSION_CHECK_SECONDS = 1.0
SCHEDULER_TICK_SECONDS = 1.0
BATCH_GATHER_SECONDS = 0.002
SHORT_JOB_SECONDS = 0.01  # handlers typically shorter than this are claimed in batches
HOLD_READY_BELOW_SECONDS = 1.0  # handlers typically shorter than this get started jobs held ready behind them
MAX_REDIS_WAIT_SECONDS = 30.0
EXIT_STUCK = 3  # the exit code of a process ended because a handler could not be stopped


def retry_while_unreachable(call: Callable[[], T], stopping: Callable[[], bool]) -> T:
    """``call()``, retried with backoff while Redis is unreachable: an outage pauses a worker, never ends it. Once
    ``stopping()`` says so, the next failure is raised instead."""
    wait = 1.0
    while True:
        try:
            return call()
        except Unreachable as exc:
            if stopping():
                raise
            logger.warning("Redis unavailable (%s); retrying in %.0f s", exc, wait)
            time.sleep(wait)
            wait = min(wait * 2, MAX_REDIS_WAIT_SECONDS)


class WorkerProcess:
    """Runs up to ``concurrency`` jobs at once from ``rq_queue_names`` (strict priority order) until stopped.

    ``supervisor``: the pid of the supervisor this process is a child of (it installs signal handlers, may end
    itself, and stops when the supervisor is gone); None when it runs inside the caller's process, as in tests.
    ``with_scheduler``: it also moves due delayed jobs (the supervisor does that for its children).
    """

    def __init__(
        self,
        rq_queue_names: list[str],
        *,
        concurrency: int,
        name: str,
        supervisor: int | None = None,
        with_scheduler: bool = False,
        on_beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.concurrency = concurrency
        self.supervised = supervisor is not None
        # Given by the supervisor, not read here: a supervisor killed before this line ran would already have left
        # this process to another parent.
        self._supervisor_pid = supervisor
        self._rq_queue_names = rq_queue_names
        self.registration = Registration(rq_queue_names, name)
        self._delayed = DelayedJobs(rq_queue_names) if with_scheduler else None
        self._on_beat = on_beat
        self._beat_every = jobs_settings().HEARTBEAT_INTERVAL
        self._beat_at = -float("inf")
        self._watcher = Watcher(on_stuck=self._on_stuck, on_tick=self._tick)
        self._slots = Slots(concurrency, self._watcher, self._handler_done)
        self._finisher = Finisher(self.registration, self._wait_for_redis, self._recorded)
        self._claim_lock = threading.Lock()  # held from a claim until its jobs are started and in hand
        # Under _state: claims whose handler has not returned yet (running, or started and held ready), the
        # handlers running (at most `concurrency`), and handlers that returned but whose outcome is not recorded
        # yet. The claimed and the unrecorded together stay under twice the capacity, so a stuck database stops
        # the claiming.
        self._state = threading.Condition()
        self._handlers = 0
        self._running = 0
        self._ready: deque[Attempt] = deque()
        self._in_hand: dict[str, Attempt] = {}  # every started attempt not yet recorded, by job id
        self._unrecorded = 0
        self._typical_handler_seconds = 0.0
        self._stop_requested = False
        self._shutdown_timer: threading.Timer | None = None
        self._heartbeat_at = self._suspension_checked_at = self._scheduler_at = 0.0
        self._turn = 0

    @property
    def name(self) -> str:
        return self.registration.name

    # The loop -------------------------------------------------------------------------------------------------

    def run(self, *, burst: bool = False, max_jobs: int | None = None) -> int:
        """Claim and run jobs until stopped (or, with ``burst``, until the queues are empty and nothing runs);
        returns how many jobs it took."""
        if self.supervised:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self.request_stop)
        self._watcher.start()  # first: it tells the supervisor this process lives, even while Redis is away
        self._wait_for_redis(self.registration.register)
        self._finisher.start()
        self._slots.start()
        taken = 0
        try:
            while not self._stop_requested:
                self._look_around()
                free = self._wait_for_free_slots()
                if self._stop_requested:
                    break
                if free == 0:
                    continue
                wanted = free if max_jobs is None else min(free, max_jobs - taken)
                with self._claim_lock:
                    if self._stop_requested:
                        break
                    claims = self._wait_for_redis(lambda: self._claim(wanted, block=not burst))  # noqa: B023
                    if claims:
                        self._start(claims)
                if claims:
                    taken += len(claims)
                    if max_jobs is not None and taken >= max_jobs:
                        break
                elif burst and self._idle_or_freed():
                    break  # nothing queued, nothing running that could queue more
        finally:
            self._teardown()
        return taken

    def _tick(self) -> None:
        """The watcher's tick: the supervisor's beat, and every HEARTBEAT_INTERVAL this process's beat in Redis.

        On the watcher's thread, not the loop's: a loop blocked waiting for jobs or for the database still lives.
        """
        self._on_beat()
        now = time.monotonic()
        if now - self._beat_at >= self._beat_every:
            try:
                self.registration.beat()
                self._beat_at = now
            except TransportError:
                pass  # Redis away: the loop reports the outage; the beat resumes with Redis

    def _look_around(self) -> None:
        if self._orphaned() and not self._stop_requested:
            logger.warning("The supervisor is gone; stopping this worker process")
            self.request_stop()
        now = time.monotonic()
        if now - self._heartbeat_at >= WORKER_HEARTBEAT_SECONDS:
            self._heartbeat_at = now
            self._wait_for_redis(self.registration.heartbeat)
        if now - self._suspension_checked_at >= SUSPENSION_CHECK_SECONDS:
            self._suspension_checked_at = now
            while self._wait_for_redis(self.registration.suspended) and not self._stop_requested:
                time.sleep(SUSPENSION_CHECK_SECONDS)  # `rq suspend`: no new jobs until `rq resume`
        if self._delayed is not None and now - self._scheduler_at >= SCHEDULER_TICK_SECONDS:
            self._scheduler_at = now
            self._wait_for_redis(self._delayed.tick)

    def _claim(self, wanted: int, *, block: bool) -> list[Claim]:
        return transport.claim(
            self._claim_order(),
            wanted,
            worker_name=self.name,
            alive_seconds=jobs_settings().HEARTBEAT_INTERVAL * 3,
            block=IDLE_BLOCK_SECONDS if block else 0,
        )

    def _claim_order(self) -> list[str]:
        """The rq queues in strict priority order; within a level, each claim starts at the next queue, so a busy
        queue does not starve the others of its level."""
        self._turn += 1
        names = self._rq_queue_names
        size = len(names) // len(PRIORITIES)  # transport.queue_names(): the same queues at every level
        if size < 2:
            return names
        shift = self._turn % size
        levels = [names[start : start + size] for start in range(0, len(names), size)]
        return [name for level in levels for name in level[shift:] + level[:shift]]

    def _wait_for_redis(self, call: Callable[[], T]) -> T:
        # An orphan gives up too: waiting out an outage, it would otherwise never look for its supervisor again.
        return retry_while_unreachable(call, lambda: self._stop_requested or self._orphaned())

    def _orphaned(self) -> bool:
        return self.supervised and os.getppid() != self._supervisor_pid

    # Slots ----------------------------------------------------------------------------------------------------

    def _wait_for_free_slots(self) -> int:
        with self._state:
            while self._busy() and not self._stop_requested:
                if not self._state.wait(timeout=IDLE_BLOCK_SECONDS):
                    self._look_around()  # every slot busy: still alive, and rq tooling sees it
            # Short jobs are finishing: give the others a moment to finish too, so that one claim, one start and
            # one finish serve several jobs. An idle process, or one running longer jobs, claims at once.
            deadline = time.monotonic() + BATCH_GATHER_SECONDS
            short_jobs = self._typical_handler_seconds < SHORT_JOB_SECONDS
            while short_jobs and 0 < self._handlers and self._free() < self.concurrency / 2:
                left = deadline - time.monotonic()
                if left <= 0 or not self._state.wait(timeout=left):
                    break
            return self._free()

    def _capacity(self) -> int:
        """How many claims may be in hand: the concurrency, plus as many started jobs held ready while handlers
        are short, so that a freed slot takes its next job at once instead of after a claim and a start (two round
        trips, most of a short job's cost). A held job already says running in SQL, early by at most about one
        typical handler. Longer handlers get none: a job held behind them would wait while another process may
        be idle."""
        return 2 * self.concurrency if self._typical_handler_seconds < HOLD_READY_BELOW_SECONDS else self.concurrency

    def _busy(self) -> bool:
        capacity = self._capacity()
        return self._handlers >= capacity or self._handlers + self._unrecorded >= 2 * capacity

    def _free(self) -> int:
        capacity = self._capacity()
        return max(0, min(capacity - self._handlers, 2 * capacity - self._handlers - self._unrecorded))

    def _idle(self) -> bool:
        return self._handlers == 0 and self._unrecorded == 0

    def _idle_or_freed(self) -> bool:
        """Burst mode with empty queues: True once nothing runs; False when a slot freed (a retry may be queued)."""
        with self._state:
            if self._idle():
                return True
            self._state.wait(timeout=0.1)
            return False

    # Starting -------------------------------------------------------------------------------------------------

    def _start(self, claims: list[Claim]) -> None:
        with self._state:
            was_idle = self._idle()
            self._handlers += len(claims)
        close_old_connections()
        try:
            attempts, skipped = self._start_in_sql(claims)
        except Exception:
            # The database is unreachable: the claims go back to their queues untouched (still waiting in SQL).
            logger.exception("Could not start %d claimed job(s); handing them back", len(claims))
            self._wait_for_redis(lambda: transport.unclaim(claims, self.name))
            self._release(handlers=len(claims))
            time.sleep(1.0)
            return
        if skipped:
            try:
                self._finisher.settle(
                    [(claim, outcome, jobs_settings().DEFAULT_RETENTION_DAYS * 86400) for claim, outcome in skipped]
                )
            finally:
                self._release(handlers=len(skipped))
        for attempt in attempts:
            with self._state:
                self._in_hand[attempt.ctx.job_id] = attempt
                hold = self._running >= self.concurrency
                if hold:
                    self._ready.append(attempt)
                    self._watcher.hold(attempt.ctx.job_id)
                else:
                    self._running += 1
            if not hold:
                self._slots.run(attempt)
        if was_idle and attempts:
            # After the handlers are on their way: rq tooling may see "busy" a moment late, the job starts sooner.
            self._wait_for_redis(lambda: self.registration.set_busy(True))

    def _start_in_sql(self, claims: list[Claim]) -> tuple[list[Attempt], list[tuple[Claim, Outcome]]]:
        """Start the claimed jobs that still wait. Returns the attempts to run, and the claims not to run with what
        rq should do about each (deferred by a rate limit, or nothing more: no row, canceled meanwhile, a duplicate
        delivery, an unregistered type)."""
        skipped: list[tuple[Claim, Outcome]] = []
        plain: list[Claim] = []
        checked: list[Claim] = []
        slots: dict[str, tuple[str, str, str]] = {}  # per-user slots taken by admit(), by job id
        for claim in claims:
            job_type = registry.find(claim.job_type)
            unlimited = (
                job_type is not None and job_type.parsed_rate_limit is None and not job_type.per_user_concurrency
            )
            (plain if unlimited else checked).append(claim)
        if checked:
            # The rare ones (a rate limit or a per-user slot to take, or a type the description does not name):
            # read, then admitted.
            rows = JobLog.objects.in_bulk([uuid.UUID(claim.job_id) for claim in checked])
            for claim in checked:
                job = rows.get(uuid.UUID(claim.job_id))
                decision = runner.admit(job) if job is not None and job.status in WAITING_STATUSES else None
                if isinstance(decision, JobType):
                    plain.append(claim)
                    if job is not None and (slot := runner.user_slot(job, decision)) is not None:
                        slots[claim.job_id] = slot
                else:
                    skipped.append((claim, decision))
        try:
            started = {str(job.pk): job for job in lifecycle.start([uuid.UUID(c.job_id) for c in plain], self.name)}
        except Exception:
            runner.release_user_slots(list(slots.values()))
            raise
        attempts = []
        for claim in plain:
            job = started.get(claim.job_id)
            job_type = registry.find(job.job_type) if job is not None else None
            if job is None or job_type is None:
                skipped.append((claim, None))
            else:
                attempts.append(Attempt(claim, job, job_type, JobContext(job, job.attempts)))
        runner.release_user_slots([slots[c.job_id] for c, _outcome in skipped if c.job_id in slots])
        return attempts, skipped

    def _handler_done(self, attempt: Attempt, *, ran: bool = True) -> None:
        took = time.monotonic() - attempt.dispatched_at
        following = None
        with self._state:
            if ran:
                self._typical_handler_seconds += (took - self._typical_handler_seconds) / 8  # a moving average
                self._running -= 1
                # The freed slot takes a held job at once; a stopping process hands those back instead.
                if self._ready and not self._stop_requested:
                    following = self._ready.popleft()
                    self._running += 1
            self._handlers -= 1
            self._unrecorded += 1
            self._state.notify_all()
        if following is not None:
            self._slots.run(following)
        self._finisher.put(attempt)

    def _release(self, *, handlers: int = 0, unrecorded: int = 0) -> None:
        with self._state:
            self._handlers -= handlers
            self._unrecorded -= unrecorded
            idle = self._idle()
            self._state.notify_all()
        if idle and not self._stop_requested:
            try:
                self.registration.set_busy(False)
            except TransportError:
                pass  # the next claim waits for Redis anyway

    def _recorded(self, batch: list[Attempt]) -> None:
        """The finisher is done with these attempts (recorded, or left to the reconciler)."""
        with self._state:
            for attempt in batch:
                self._in_hand.pop(attempt.ctx.job_id, None)
        for attempt in batch:
            self._watcher.remove(attempt.ctx.job_id)
        self._release(unrecorded=len(batch))

    # Stopping -------------------------------------------------------------------------------------------------

    def request_stop(self, signum: int = signal.SIGTERM, frame: Any = None) -> None:
        """Warm shutdown: no more claims; running jobs get SHUTDOWN_GRACE seconds, then go back to their queues."""
        self._stop_requested = True
        with self._state:
            self._state.notify_all()
        if self._shutdown_timer is None and self._watcher.guards():
            grace = jobs_settings().SHUTDOWN_GRACE
            logger.warning("Shutting down; %d running job(s) get %s s to finish", len(self._watcher.guards()), grace)
            self._shutdown_timer = threading.Timer(grace, self._end_of_grace)
            self._shutdown_timer.daemon = True
            self._shutdown_timer.start()

    def _end_of_grace(self) -> None:
        for guard in self._watcher.guards():
            guard.interrupt(WorkerShutdown)  # the runner puts the job back on its queue

    def _teardown(self) -> None:
        # The loop has ended (stop, burst done, max jobs): the jobs in flight finish and are recorded first. Held
        # jobs run too, unless the process is stopping (a stop request may also come while this waits).
        while True:
            if self._stop_requested:
                self._return_held()
            with self._state:
                if self._idle():
                    break
                self._state.wait(timeout=0.2)
        self._slots.close()
        self._finisher.close()
        self._watcher.close()
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()
        if self._delayed is not None:
            self._delayed.close()
        flush_published()
        try:
            self.registration.unregister()
        except TransportError:
            logger.warning("Could not unregister worker %s from rq", self.name)

    def _return_held(self) -> None:
        """Stopping: started jobs still held ready go back to their queues unrun, as after a shutdown's grace."""
        with self._state:
            held = list(self._ready)
            self._ready.clear()
        for attempt in held:
            attempt.guard = AttemptGuard(attempt.ctx, ThreadInterrupter(threading.get_ident()))
            attempt.guard.stop()
            attempt.error = WorkerShutdown()
            self._handler_done(attempt, ran=False)

    def _on_stuck(self, guard: AttemptGuard) -> None:
        """A handler no exception could stop (blocked in C): end the process, which stops it."""
        if not self.supervised:
            logger.error("Job %s cannot be stopped inside this process; it runs on", guard.ctx.job_id)
            return
        self._stop_requested = True
        # Once it holds the claim lock no claim is on its way (one popped now would be lost with the process); the
        # finisher records nothing more once it hands over what it has.
        with self._claim_lock, self._finisher.taken_over() as done:
            if done is None:
                return  # ending already
            logger.error(
                "Job %s did not stop after %s; ending this worker process and returning its other jobs",
                guard.ctx.job_id,
                (guard.interrupted_with or WorkerShutdown).__name__,
            )
            try:
                self._record_before_exit(guard, done)
            finally:
                flush_published()
                os._exit(EXIT_STUCK)

    def _record_before_exit(self, stuck: AttemptGuard, done: list[Attempt]) -> None:
        """What the process holds, recorded before it ends: outcomes already known as usual, the stuck job as
        stopped (canceled, timed out or returned), and every other job back to its queue, no attempt spent."""
        with self._state:
            in_hand = dict(self._in_hand)
        recorded = {attempt.ctx.job_id for attempt in done}
        for attempt in in_hand.values():
            if attempt.ctx.job_id in recorded:
                continue
            if attempt.guard is stuck:
                attempt.error = (stuck.interrupted_with or WorkerShutdown)()
            else:
                attempt.error = WorkerShutdown()  # running or held: back to its queue
            attempt.result = None
            done.append(attempt)
        close_old_connections()
        self._finisher.record(done)
