"""The pool worker (``jobs_worker --concurrency N``): many jobs at once per process, on a lean path.

Where rq's own loop spends about ten Redis round trips and the per-job runner two SQL transactions on every job,
this worker works in batches:

- it claims up to as many jobs as it has free slots with one Lua script (pop in strict priority order, skip
  paused queues, mark the rq job started, add it to rq's StartedJobRegistry, set its liveness key), and starts
  them in SQL with one statement (jobs.runner.start_attempts); while handlers are short, as many more are claimed
  and held ready, so that a slot that frees up starts its next job at once (see _capacity);
- sync handlers run on a pool of threads, ``async def`` handlers as tasks on one event loop in the process;
- one watcher thread looks after every running handler: liveness beats and cancel requests in one pipelined
  round trip for all of them, progress flushes, timeouts and the cancel grace (jobs.runner.AttemptGuard);
- one finisher thread records whatever finished together: successes with one statement on PostgreSQL
  (jobs.runner.record_successes), then one Lua script for rq's side (job hashes, registries, worker counters).
  Failures, retries, cancellations and concurrency-limited jobs go through the runner and rq's own handlers, as
  on the other paths.

rq's data model is kept (queues, job hashes, registries, the worker's registration), so rq tooling and the admin
see everything. Database connections are per thread and closed like a request's around every job.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue as queue_module
import threading
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from django.db import close_old_connections
from redis.exceptions import RedisError
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job, Retry
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker, WorkerStatus

from . import batches, queues, runner
from .batches import Attempt
from .conf import jobs_settings
from .exceptions import WorkerShutdown
from .progress import flush_published
from .queues import Claim
from .worker import JobsWorkerMixin

logger = logging.getLogger(__name__)

# How long an idle worker blocks waiting for a job: also how soon it notices a stop request or a resumed queue.
IDLE_BLOCK_SECONDS = 1.0
WORKER_HEARTBEAT_SECONDS = 10.0
SUSPENSION_CHECK_SECONDS = 1.0
BATCH_GATHER_SECONDS = 0.002
SHORT_JOB_SECONDS = 0.01  # handlers typically shorter than this are claimed in batches
HOLD_READY_BELOW_SECONDS = 1.0  # handlers typically shorter than this get started jobs held ready behind them


class AsyncInterrupter:
    """Interrupts an ``async def`` handler: cancels its task, which then raises ``exc_type`` in its place."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.task: asyncio.Task[Any] | None = None
        self.exc_type: type[BaseException] | None = None

    def raise_in_handler(self, exc_type: type[BaseException]) -> None:
        self.exc_type = exc_type
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)

    def clear(self) -> None:
        pass  # a task that already ended ignores cancel()


class PoolWatcher(threading.Thread):
    """One thread for every running attempt of the process: beats, cancel requests, progress, timeouts."""

    def __init__(self) -> None:
        super().__init__(name="jobs-pool-watch", daemon=True)
        self._guards: dict[str, runner.AttemptGuard] = {}
        self._held: set[str] = set()  # started jobs held ready for a free slot: beaten, not yet guarded
        self._lock = threading.Lock()
        self._closed = threading.Event()
        settings = jobs_settings()
        self._poll = settings.CANCEL_POLL_INTERVAL
        self._beat_every = settings.HEARTBEAT_INTERVAL

    def hold(self, job_id: str) -> None:
        with self._lock:
            self._held.add(job_id)

    def add(self, guard: runner.AttemptGuard) -> None:
        with self._lock:
            self._held.discard(guard.ctx.job_id)
            self._guards[guard.ctx.job_id] = guard

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._held.discard(job_id)
            self._guards.pop(job_id, None)

    def guards(self) -> list[runner.AttemptGuard]:
        with self._lock:
            return list(self._guards.values())

    def run(self) -> None:
        next_beat = time.monotonic() + self._beat_every  # the claim set every liveness key
        while not self._closed.wait(self._poll):
            with self._lock:
                guards, held = list(self._guards.values()), list(self._held)
            now = time.monotonic()
            beat = now >= next_beat
            if not guards and not (beat and held):
                continue
            # Held jobs only need their liveness kept; a cancel request waits in Redis for their guard's first tick.
            ids = [guard.ctx.job_id for guard in guards] + (held if beat else [])
            try:
                flags = queues.beat_and_check_cancel(ids, self._beat_every * 3 if beat else None)
                if beat:
                    next_beat = now + self._beat_every
            except RedisError:
                # Redis away: the jobs run on, timeouts still hold; beats and cancel requests resume later.
                logger.warning("Redis unavailable to the pool watcher", exc_info=True)
                flags = [False] * len(ids)
            for guard, cancel_requested in zip(guards, flags[: len(guards)], strict=True):
                try:
                    guard.tick(now, cancel_requested)
                except Exception:  # noqa: BLE001 - one job's trouble must not stop the watch over the others
                    logger.exception("Job %s: watcher tick failed", guard.ctx.job_id)

    def close(self) -> None:
        self._closed.set()


class JobsThreadPoolWorker(JobsWorkerMixin, SimpleWorker):
    """Runs up to ``concurrency`` jobs at once in one process (``--concurrency N``), on the lean path above.

    A handler blocked in C code (a long time.sleep) cannot be interrupted in a thread; use the forking worker for
    jobs that must be stoppable at any instant.
    """

    def __init__(self, *args: Any, concurrency: int = 8, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="jobs-run")
        # Under _slots: claims whose handler has not returned yet (running, or started and held ready), the
        # handlers running (at most `concurrency`), and handlers that returned but whose outcome is not recorded
        # yet. The finisher records while new handlers already run; the claimed and the unrecorded together stay
        # under twice the capacity, so a stuck database stops the claiming.
        self._handlers = 0
        self._running = 0
        self._ready: deque[Attempt] = deque()
        self._unrecorded = 0
        self._typical_handler_seconds = 0.0
        self._slots = threading.Condition()
        self._finished: queue_module.SimpleQueue[Attempt | None] = queue_module.SimpleQueue()
        self._watcher = PoolWatcher()
        self._finisher = threading.Thread(target=self._finish_loop, name="jobs-pool-finish", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()
        self._rq_queue_names = [q.name for q in self.queues]
        self._last_worker_heartbeat = 0.0
        self._suspension_checked_at = 0.0

    # The loop -----------------------------------------------------------------------------------------------

    def work(  # type: ignore[override]
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,
        **_ignored: Any,
    ) -> bool:
        self.bootstrap(logging_level)
        if with_scheduler:
            self._start_scheduler(burst, logging_level)
        self._install_signal_handlers()  # type: ignore[no-untyped-call]
        self._watcher.start()
        self._finisher.start()
        taken = 0
        idle_since = time.monotonic()
        try:
            while not self._stop_requested:
                if time.monotonic() - self._suspension_checked_at >= SUSPENSION_CHECK_SECONDS:
                    self._suspension_checked_at = time.monotonic()
                    self.check_for_suspension(burst)  # `rq suspend`: one GET, not one per claim
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                free = self._wait_for_free_slots()
                if self._stop_requested:
                    break
                if free == 0:
                    continue
                wanted = free if max_jobs is None else min(free, max_jobs - taken)
                claims = self._wait_for_redis(lambda: self._claim(wanted, block=not burst))  # noqa: B023
                if claims:
                    taken += len(claims)
                    self._start(claims)
                    idle_since = time.monotonic()
                    if max_jobs is not None and taken >= max_jobs:
                        break
                    continue
                if burst:
                    if self._wait_until_idle_or_freed():
                        break  # nothing queued and nothing running that could queue more
                    continue
                if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                    break
        except StopRequested:
            pass
        finally:
            self.teardown()
        return bool(taken)

    def _claim(self, wanted: int, *, block: bool) -> list[Claim]:
        now = time.monotonic()
        if now - self._last_worker_heartbeat >= WORKER_HEARTBEAT_SECONDS:
            self._last_worker_heartbeat = now
            self.heartbeat()
        return queues.claim_jobs(
            self._rq_queue_names,
            wanted,
            worker_name=self.name,
            alive_seconds=jobs_settings().HEARTBEAT_INTERVAL * 3,
            block=IDLE_BLOCK_SECONDS if block else 0,
            connection=self.connection,
        )

    def _wait_for_free_slots(self) -> int:
        with self._slots:
            while self._busy() and not self._stop_requested:
                if not self._slots.wait(timeout=IDLE_BLOCK_SECONDS):
                    self.heartbeat()  # every slot busy: still alive, and rq tooling sees it
            # Short jobs are finishing: give the others a moment to finish too, so that one claim, one start
            # statement and one finish statement serve several jobs. An idle worker, or one running longer jobs
            # (where the wait would only add to each job's time), claims at once.
            deadline = time.monotonic() + BATCH_GATHER_SECONDS
            short_jobs = self._typical_handler_seconds < SHORT_JOB_SECONDS
            while short_jobs and 0 < self._handlers and self._free() < self.concurrency / 2:
                left = deadline - time.monotonic()
                if left <= 0 or not self._slots.wait(timeout=left):
                    break
            return self._free()

    def _capacity(self) -> int:
        """How many claims may be in hand: the concurrency, plus as many started jobs held ready while handlers are
        short, so that a slot that frees up takes its next job at once instead of after a claim and a start (two
        round trips, most of a short job's overhead; and the claims and starts come in bigger batches). A held job
        is already running in SQL (its started_at is early by its wait, at most about one typical handler) and is
        beaten like a running one. Longer handlers get none: a job held behind them would wait while another
        worker may be idle."""
        # As many held as running: fewer left the threads idle between short jobs (measured with bench/peers.py).
        short = self._typical_handler_seconds < HOLD_READY_BELOW_SECONDS
        return 2 * self.concurrency if short else self.concurrency

    def _busy(self) -> bool:
        capacity = self._capacity()
        return self._handlers >= capacity or self._handlers + self._unrecorded >= 2 * capacity

    def _free(self) -> int:
        capacity = self._capacity()
        return max(0, min(capacity - self._handlers, 2 * capacity - self._handlers - self._unrecorded))

    def _idle(self) -> bool:
        return self._handlers == 0 and self._unrecorded == 0

    def _wait_until_idle_or_freed(self) -> bool:
        """Burst mode with empty queues: True once nothing runs; False when a slot freed (a retry may be queued)."""
        with self._slots:
            if self._idle():
                return True
            self._slots.wait(timeout=0.1)
            return False

    def _start(self, claims: list[Claim]) -> None:
        with self._slots:
            was_idle = self._idle()
            self._handlers += len(claims)
        close_old_connections()
        try:
            attempts, skipped = batches.start_many(claims, self.name)
        except Exception:
            # The database is unreachable: the claims go back to their queues untouched (still waiting in SQL).
            logger.exception("Could not start %d claimed job(s); handing them back", len(claims))
            self._hand_back(claims)
            time.sleep(1.0)
            return
        if skipped:
            self._finish_skipped(skipped)
        for attempt in attempts:
            with self._slots:
                hold = self._running >= self.concurrency
                if hold:
                    self._ready.append(attempt)
                    self._watcher.hold(attempt.ctx.job_id)
                else:
                    self._running += 1
            if not hold:
                self._dispatch(attempt)
        if was_idle:
            # After the handlers are on their way: rq tooling may see "busy" a moment late, the job starts sooner.
            self._wait_for_redis(lambda: self.set_state(WorkerStatus.BUSY))

    def _hand_back(self, claims: list[Claim]) -> None:
        for claim in claims:
            try:
                job = Job.fetch(claim.job_id, connection=self.connection, serializer=JSONSerializer)
                with self.connection.pipeline() as pipe:
                    self._execution(claim).delete(job, pipeline=pipe)
                    pipe.delete(queues.alive_key(claim.job_id))
                    pipe.hset(job.key, "status", "queued")
                    pipe.lpush(queues.get_queue(claim.queue_name).key, claim.job_id)
                    pipe.execute()
            except Exception:  # noqa: BLE001 - the reconciler repairs what this could not
                logger.exception("Could not hand job %s back to its queue", claim.job_id)
        self._release(handlers=len(claims))

    # Running handlers ---------------------------------------------------------------------------------------

    def _dispatch(self, attempt: Attempt) -> None:
        """Run a started attempt now (its slot is counted in _running)."""
        attempt.dispatched_at = time.monotonic()
        if inspect.iscoroutinefunction(attempt.job_type.handler):
            self._start_async(attempt)
        else:
            self._pool.submit(self._run_in_thread, attempt)

    def _return_held(self) -> None:
        """Stopping: started jobs still held ready go back to their queues unrun, like a job interrupted by a
        shutdown (the runner's WorkerShutdown outcome: back to queued, the attempt not counted)."""
        with self._slots:
            held = list(self._ready)
            self._ready.clear()
        for attempt in held:
            # The finisher concludes attempts through their guard; this one is stopped before it could ever fire.
            attempt.guard = runner.AttemptGuard(attempt.ctx, runner.ThreadInterrupter(threading.get_ident()))
            attempt.guard.stop()
            attempt.error = WorkerShutdown()
            self._handler_done(attempt, ran=False)

    def _run_in_thread(self, attempt: Attempt) -> None:
        close_old_connections()
        try:
            attempt.guard = runner.AttemptGuard(
                attempt.ctx,
                runner.ThreadInterrupter(threading.get_ident()),
                deadline=time.monotonic() + attempt.claim.timeout,
            )
            self._watcher.add(attempt.guard)
            attempt.result, attempt.error = runner.call_handler(
                attempt.job, attempt.job_type, attempt.ctx, attempt.guard
            )
        except BaseException as exc:  # noqa: BLE001 - an interrupt that landed outside the handler
            attempt.error = exc
        finally:
            close_old_connections()
            self._handler_done(attempt)

    def _start_async(self, attempt: Attempt) -> None:
        loop = self._event_loop()
        interrupter = AsyncInterrupter(loop)
        attempt.guard = runner.AttemptGuard(attempt.ctx, interrupter, deadline=time.monotonic() + attempt.claim.timeout)
        try:
            payload = attempt.job_type.clean(attempt.job.payload)
        except Exception as exc:  # noqa: BLE001 - an invalid payload fails like any handler error
            attempt.guard.stop()
            attempt.error = exc
            self._handler_done(attempt)
            return
        self._watcher.add(attempt.guard)
        asyncio.run_coroutine_threadsafe(self._run_async(attempt, interrupter, payload), loop)

    async def _run_async(self, attempt: Attempt, interrupter: AsyncInterrupter, payload: dict[str, Any]) -> None:
        interrupter.task = asyncio.current_task()
        assert attempt.guard is not None
        try:
            attempt.result = await attempt.job_type.handler(attempt.ctx, payload)
        except asyncio.CancelledError:
            attempt.error = (interrupter.exc_type or WorkerShutdown)()
        except BaseException as exc:  # noqa: BLE001 - every failure is concluded by the finisher
            attempt.error = exc
        finally:
            attempt.guard.stop()
            self._handler_done(attempt)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:  # the main thread and a handler's thread (a held job's dispatch) may both start it
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(target=self._loop.run_forever, name="jobs-pool-loop", daemon=True)
                self._loop_thread.start()
            return self._loop

    # Finishing ----------------------------------------------------------------------------------------------

    def _finish_loop(self) -> None:
        while True:
            first = self._finished.get()
            if first is None:
                return
            batch = [first]
            while True:  # whatever else finished meanwhile goes in the same transaction and round trip
                try:
                    more = self._finished.get_nowait()
                except queue_module.Empty:
                    break
                if more is None:
                    self._finished.put(None)
                    break
                batch.append(more)
            try:
                self._finish(batch)
            except Exception:  # noqa: BLE001 - the reconciler repairs what could not be recorded
                logger.exception("Could not record the outcome of %d job(s)", len(batch))
            finally:
                for attempt in batch:
                    self._watcher.remove(attempt.ctx.job_id)
                self._release(unrecorded=len(batch))

    def _finish(self, batch: list[Attempt]) -> None:
        close_old_connections()
        for attempt in batch:
            attempt.outcome = self._conclude(attempt)
        succeeded = [a for a in batch if isinstance(a.outcome, runner.Succeeded)]
        for attempt in succeeded:
            attempt.outcome = attempt.outcome.result
        runner.record_successes(succeeded)
        self._finish_in_redis(
            [(a.claim, None if a in succeeded else a.outcome, int(a.job_type.retention.total_seconds())) for a in batch]
        )

    def _finish_skipped(self, skipped: list[tuple[Claim, Retry | None]]) -> None:
        """Claims that were not started (see batches.start_many) are done in rq too, or retried later."""
        retention = jobs_settings().DEFAULT_RETENTION_DAYS * 86400
        try:
            self._finish_in_redis([(claim, retry, retention) for claim, retry in skipped])
        finally:
            self._release(handlers=len(skipped))

    def _finish_in_redis(self, outcomes: list[tuple[Claim, Any, int]]) -> None:
        """rq's side of finished claims: (claim, outcome, result TTL); outcome None is a plain success."""
        lean: list[tuple[Claim, int]] = []
        for claim, outcome, ttl in outcomes:
            if outcome is None and not claim.rate_limited:
                lean.append((claim, ttl))
            else:
                self._wait_for_redis(lambda c=claim, o=outcome: self._finish_in_rq(c, o))  # type: ignore[misc]
        self._wait_for_redis(lambda: queues.finish_claims(lean, self.key, connection=self.connection))

    def _conclude(self, attempt: Attempt) -> Any:
        assert attempt.guard is not None
        try:
            return runner.conclude(
                attempt.job, attempt.job_type, attempt.ctx, attempt.guard, attempt.result, attempt.error
            )
        except Exception:  # noqa: BLE001 - a final failure, recorded by the runner; rq records it too
            return Failed("".join(traceback.format_exc()))

    def _finish_in_rq(self, claim: Claim, outcome: Any) -> None:
        """rq's own handling for the rarer outcomes: retries, failures, and releasing a concurrency slot."""
        try:
            job = Job.fetch(claim.job_id, connection=self.connection, serializer=JSONSerializer)
        except Exception:  # noqa: BLE001 - deleted meanwhile: nothing left to record in rq
            return
        queue = queues.get_queue(claim.queue_name)
        job.started_at = datetime.fromtimestamp(claim.started_at, UTC)
        job.ended_at = datetime.now(UTC)
        registry = StartedJobRegistry(claim.queue_name, connection=self.connection, serializer=JSONSerializer)
        execution = self._execution(claim)
        if isinstance(outcome, Retry):
            self.handle_job_retry(job, queue, outcome, registry, execution)
        elif isinstance(outcome, Failed):
            self.handle_job_failure(job, queue, registry, exc_string=outcome.exc_string, execution=execution)
        else:
            job._result = outcome
            self.handle_job_success(job, queue, registry, execution)
        self.connection.delete(queues.alive_key(claim.job_id))

    def _execution(self, claim: Claim) -> Execution:
        execution = Execution(claim.execution_id, claim.job_id, connection=self.connection, worker_name=self.name)
        execution.created_at = datetime.fromtimestamp(claim.started_at, UTC)
        return execution

    def _handler_done(self, attempt: Attempt, *, ran: bool = True) -> None:
        took = time.monotonic() - attempt.dispatched_at
        following = None
        with self._slots:
            if ran:
                self._typical_handler_seconds += (took - self._typical_handler_seconds) / 8  # a moving average
                self._running -= 1
                # The freed slot takes a held job at once; a stopping worker hands those back instead.
                if self._ready and not self._stop_requested:
                    following = self._ready.popleft()
                    self._running += 1
            self._handlers -= 1
            self._unrecorded += 1
            self._slots.notify_all()
        if following is not None:
            self._dispatch(following)
        self._finished.put(attempt)

    def _release(self, *, handlers: int = 0, unrecorded: int = 0) -> None:
        with self._slots:
            self._handlers -= handlers
            self._unrecorded -= unrecorded
            idle = self._idle()
            self._slots.notify_all()
        if idle and not self._stop_requested:
            try:
                self.set_state(WorkerStatus.IDLE)
            except RedisError:
                pass  # the next claim waits for Redis anyway

    # Stopping -----------------------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        # Never raise StopRequested from the signal handler, as rq does when idle: it could land between a claim
        # and its start. The loop sees the flag within IDLE_BLOCK_SECONDS.
        self._stop_requested = True
        self.set_shutdown_requested_date()  # type: ignore[no-untyped-call]

    def request_stop(self, signum: int, frame: Any) -> None:
        """Warm shutdown: running jobs get SHUTDOWN_GRACE seconds, then go back to their queues."""
        running = self._watcher.guards()
        if running and self._shutdown_timer is None:
            grace = jobs_settings().SHUTDOWN_GRACE
            logger.warning("Shutting down; %d running job(s) get %s s to finish", len(running), grace)
            self._shutdown_timer = threading.Timer(grace, self._end_of_grace_for_all)
            self._shutdown_timer.daemon = True
            self._shutdown_timer.start()
        SimpleWorker.request_stop(self, signum, frame)  # type: ignore[no-untyped-call]

    def _end_of_grace_for_all(self) -> None:
        for guard in self._watcher.guards():
            guard.interrupt(WorkerShutdown)  # the runner puts the job back on its queue

    def teardown(self) -> None:
        # The loop has ended (stop, burst done, max jobs): the jobs in flight finish and are recorded first. Held
        # jobs run too, unless the worker is stopping (a stop request may also come while this waits).
        while True:
            if self._stop_requested:
                self._return_held()
            with self._slots:
                if self._idle():
                    break
                self._slots.wait(timeout=0.2)
        self._pool.shutdown(wait=True)
        self._finished.put(None)
        self._finisher.join(timeout=10)
        self._watcher.close()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()
        flush_published()
        super().teardown()


class Failed:
    """A final failure, recorded in SQL; rq gets the traceback for its FailedJobRegistry."""

    def __init__(self, exc_string: str) -> None:
        self.exc_string = exc_string
