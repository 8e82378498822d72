"""rq workers that know about the JobLog: database connections handled per job, lost attempts repaired."""

from __future__ import annotations

import inspect
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import close_old_connections, connections
from django.utils.module_loading import import_string
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import worker_registration
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker, SimpleWorker, SpawnWorker, Worker, WorkerStatus

# rq's SpawnWorker starts each horse as a fresh interpreter that never runs django.setup(), so it cannot
# run the runner: it is refused below rather than failing every job.
from . import progress, queues, registry, runner
from .conf import jobs_settings
from .exceptions import JobsError, WorkerShutdown

logger = logging.getLogger(__name__)

PAUSED_POLL_SECONDS = 1.0
PAUSED_RECHECK_SECONDS = 2
REGISTRATION_CHECK_SECONDS = 10.0
IDLE_RECHECK_SECONDS = 10
MAX_REDIS_WAIT_SECONDS = 30.0

T = TypeVar("T")
# rq restarts its scheduler process (delayed jobs, retries) from maintenance; its default is every 10 minutes.
MAINTENANCE_INTERVAL_SECONDS = 30


class JobsWorkerMixin:
    """Mixed in before an rq worker class; everything else is rq's own machinery."""

    def execute_job(self, job: Job, queue: Queue) -> Any:
        # Like a request: a job starts and ends with fresh-enough database connections.
        close_old_connections()
        try:
            return super().execute_job(job, queue)  # type: ignore[misc]
        finally:
            close_old_connections()

    def fork_work_horse(self, job: Job, queue: Queue) -> Any:
        # A forked horse must not share the parent's database sockets.
        connections.close_all()
        progress.load_channel_layer()  # imported once here, not again in every horse
        return super().fork_work_horse(job, queue)  # type: ignore[misc]

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """rq's dequeue, skipping paused queues, with idle waits bounded so the worker looks around regularly."""
        idle_since = time.monotonic()
        while True:
            paused = self._wait_for_redis(queues.paused_queues)
            active = [q for q in self.queues if queues.job_queue_of(q.name) not in paused]  # type: ignore[attr-defined]
            if not active:
                if timeout is None:  # burst: nothing it may take, so it is done
                    return None
                # Everything this worker serves is paused: stay registered and alive, look again soon.
                self._wait_for_redis(lambda: self.set_state(WorkerStatus.IDLE))  # type: ignore[attr-defined]
                self.heartbeat()
                time.sleep(PAUSED_POLL_SECONDS)
                continue
            self._ordered_queues = active
            if timeout is None:  # burst: rq does not block
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)  # type: ignore[misc]
            # rq returns from an idle wait only through max_idle_time. Bounding it means a resumed queue, a
            # lost registration (Redis restarted) and the heartbeat are all looked at every few seconds.
            recheck = PAUSED_RECHECK_SECONDS if paused else IDLE_RECHECK_SECONDS
            started = time.monotonic()
            self._in_dequeue = True
            try:
                result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=recheck)  # type: ignore[misc]
            finally:
                self._in_dequeue = False
            if result is None:
                if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                    return None
                continue
            if time.monotonic() - started > 0.05:
                job, queue = result
                # It waited a while: its queue may have been paused meanwhile. Then hand the job back.
                if queues.job_queue_of(queue.name) in self._wait_for_redis(queues.paused_queues):
                    self.connection.lpush(queue.key, job.id)  # type: ignore[attr-defined]
                    continue
            return result

    def unsubscribe(self) -> None:
        """rq's unsubscribe, with its wait really bounded.

        rq unsubscribes first, so that Redis's reply wakes the listener thread, then stops the thread. A listener
        that handles the reply before it is told to stop goes back to wait up to 60 s for a new subscription, and
        redis-py 8's ``stop()`` waits for it: a worker's teardown then hung for a minute. The listener is told to
        stop first (without waiting), the reply then ends it, and the wait is at most a second, as rq meant.
        """
        thread = getattr(self, "pubsub_thread", None)
        if not thread:
            return
        if "timeout" in inspect.signature(thread.stop).parameters:
            thread.stop(timeout=0)
        else:
            thread.stop()  # redis-py before 8: stop() only clears the flag
        self.pubsub.unsubscribe()  # type: ignore[attr-defined]
        thread.join(timeout=1)

    def request_stop(self, signum: int, frame: Any) -> None:
        """Warm shutdown, bounded: the running job gets SHUTDOWN_GRACE seconds, then goes back to its queue."""
        job_id = self.get_current_job_id()  # type: ignore[attr-defined]
        super().request_stop(signum, frame)  # type: ignore[misc]  # raises StopRequested when idle
        if job_id and self._shutdown_timer is None:
            grace = jobs_settings().SHUTDOWN_GRACE
            logger.warning("Shutting down; job %s gets %s s to finish before it goes back to its queue", job_id, grace)
            self._shutdown_timer = threading.Timer(grace, self._end_of_grace, args=(job_id,))
            self._shutdown_timer.daemon = True
            self._shutdown_timer.start()

    _shutdown_timer: threading.Timer | None = None
    _requeue_job_id: str | None = None

    def _end_of_grace(self, job_id: str) -> None:
        if self.get_current_job_id() != job_id:  # type: ignore[attr-defined]
            return  # it finished in time
        if self.horse_pid:  # type: ignore[attr-defined]
            # A forked horse is killed; the failure hook below then queues the job again.
            self._requeue_job_id = job_id
            self.kill_horse()  # type: ignore[attr-defined]
        elif runner.current_watcher is not None and runner.current_watcher.ctx.job_id == job_id:
            runner.current_watcher.interrupt(WorkerShutdown)

    _registration_checked_at = 0.0
    _in_dequeue = False

    def _wait_for_redis(self, call: Callable[[], T]) -> T:
        """``call()``, retried with backoff while Redis is unreachable: an outage pauses the worker, never ends it."""
        wait = 1.0
        while True:
            try:
                return call()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                self._registration_checked_at = 0.0  # look at the registration once Redis is back
                logger.warning("Redis unavailable (%s); retrying in %.0f s", exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, MAX_REDIS_WAIT_SECONDS)

    def check_for_suspension(self, burst: bool) -> Any:
        return self._wait_for_redis(lambda: super(JobsWorkerMixin, self).check_for_suspension(burst))  # type: ignore[misc]

    def run_maintenance_tasks(self) -> Any:
        return self._wait_for_redis(lambda: super(JobsWorkerMixin, self).run_maintenance_tasks())  # type: ignore[misc]

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> Any:
        if not self._in_dequeue and pipeline is None:
            # rq quits on a Redis error outside its dequeue loop (e.g. the heartbeat after a job); wait instead.
            return self._wait_for_redis(lambda: self._heartbeat(timeout, pipeline))
        return self._heartbeat(timeout, pipeline)

    def _heartbeat(self, timeout: int | None, pipeline: Any) -> Any:
        try:
            outcome = super().heartbeat(timeout, pipeline)  # type: ignore[misc]
        except RedisError:
            self._registration_checked_at = 0.0  # Redis was away: look at the registration once it is back
            raise
        now = time.monotonic()
        if pipeline is None and now - self._registration_checked_at >= REGISTRATION_CHECK_SECONDS:
            self._registration_checked_at = now
            # Redis restarted with its data gone: register again, or rq tooling and health see no worker.
            if not self.connection.sismember(worker_registration.REDIS_WORKER_KEYS, self.key):  # type: ignore[attr-defined]
                logger.warning("Worker registration lost (Redis restarted?); registering again")
                self.connection.delete(self.key)  # type: ignore[attr-defined]
                self.register_birth()  # type: ignore[attr-defined]
        return outcome

    def teardown(self) -> None:
        super().teardown()  # type: ignore[misc]
        # rq's scheduler builds its own connection pool; an open socket left at exit would keep an embedded
        # Redis server alive after its last real user is gone.
        scheduler_connection = getattr(getattr(self, "scheduler", None), "_connection", None)
        if scheduler_connection is not None:
            scheduler_connection.connection_pool.disconnect()

    def main_work_horse(self, job: Job, queue: Queue) -> Any:
        runner.in_work_horse = True
        return super().main_work_horse(job, queue)  # type: ignore[misc]

    def handle_job_failure(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> Any:
        outcome = super().handle_job_failure(job, queue, *args, **kwargs)  # type: ignore[misc]
        if job.func_name == queues.RUNNER:
            # The runner records every failure it sees; a row still `running` here means the horse died
            # under it (killed, out of memory, stopped on request).
            reason = kwargs.get("exc_string") or "The worker running this job was lost."
            try:
                if self._requeue_job_id == job.id:
                    self._requeue_job_id = None
                    runner.requeue_after_shutdown(job.id)
                else:
                    runner.recover_lost_attempt(job.id, str(reason).strip()[:1000])
            except Exception:  # noqa: BLE001 - the reconciler repairs whatever this could not
                logger.exception("Could not record the lost attempt of job %s", job.id)
        return outcome


class JobsWorker(JobsWorkerMixin, Worker):
    """Forks a work horse per job: a crash or a hard stop kills the horse, not the worker."""


class JobsSimpleWorker(JobsWorkerMixin, SimpleWorker):
    """Runs jobs in the worker process itself: no fork cost, but a crashing job takes the worker with it."""


def worker_classes() -> dict[str, type[BaseWorker]]:
    from .pool_worker import JobsThreadPoolWorker  # it builds on the mixin above

    return {"fork": JobsWorker, "simple": JobsSimpleWorker, "thread": JobsThreadPoolWorker}


class WorkerConfigError(JobsError):
    """The worker cannot start with these options."""

    code = "worker_config"


def resolve_worker_class(name: str) -> type[BaseWorker]:
    """ "fork", "simple", or the dotted path of an rq worker class (the JobLog hooks are mixed in)."""
    if name in (named := worker_classes()):
        return named[name]
    try:
        cls = import_string(name)
    except ImportError as exc:
        raise WorkerConfigError(f"Cannot import worker class {name!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, BaseWorker)):
        raise WorkerConfigError(f"{name!r} is not an rq worker class.")
    if issubclass(cls, SpawnWorker):
        raise WorkerConfigError(f"{name!r} spawns fresh interpreters without Django; use fork or simple.")
    if issubclass(cls, JobsWorkerMixin):
        return cls
    return type(f"Jobs{cls.__name__}", (JobsWorkerMixin, cls), {})


def select_queues(queue_names: Sequence[str] = (), type_names: Sequence[str] = ()) -> list[str]:
    """rq queue names for the chosen job queues and types (all when none chosen), in strict priority order."""
    known = {t.queue for t in registry.all_types()}
    if not known:
        raise WorkerConfigError("No job types are registered: add a job_types.py module to an installed app.")
    unknown = sorted(set(queue_names) - known)
    if unknown:
        raise WorkerConfigError(f"Unknown queue(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")
    chosen = set(queue_names)
    for type_name in type_names:
        chosen.add(registry.get(type_name).queue)
    return queues.queue_names(chosen or known)


def build_worker(
    *,
    queue_names: Sequence[str] = (),
    type_names: Sequence[str] = (),
    worker_class: str = "fork",
    name: str | None = None,
    concurrency: int = 1,
) -> BaseWorker:
    cls = worker_class_for(worker_class, concurrency)
    connection = queues.get_connection()
    rq_queues = [
        Queue(q, connection=connection, serializer=JSONSerializer) for q in select_queues(queue_names, type_names)
    ]
    from .pool_worker import JobsThreadPoolWorker

    options: dict[str, Any] = {"concurrency": concurrency} if issubclass(cls, JobsThreadPoolWorker) else {}
    return cls(
        rq_queues,
        name=name,
        connection=connection,
        serializer=JSONSerializer,
        maintenance_interval=MAINTENANCE_INTERVAL_SECONDS,
        **options,
    )


def worker_class_for(worker_class: str, concurrency: int) -> type[BaseWorker]:
    """The worker class for these options: ``--concurrency`` above 1 means the thread-pool worker."""
    if concurrency < 1:
        raise WorkerConfigError("--concurrency must be 1 or more.")
    from .pool_worker import JobsThreadPoolWorker

    cls = resolve_worker_class(worker_class)
    if concurrency > 1 and worker_class == "fork":
        return JobsThreadPoolWorker  # the default class, not a choice: more than one job at once needs threads
    if concurrency > 1 and not issubclass(cls, JobsThreadPoolWorker):
        raise WorkerConfigError(
            f"--concurrency {concurrency} runs jobs on threads; it cannot be used with {worker_class!r}."
        )
    return cls


def run_worker(
    *,
    queue_names: Sequence[str] = (),
    type_names: Sequence[str] = (),
    worker_class: str = "fork",
    name: str | None = None,
    burst: bool = False,
    with_scheduler: bool = True,
    max_jobs: int | None = None,
    logging_level: str = "INFO",
    concurrency: int = 1,
) -> bool:
    """Consume the chosen queues until stopped (or until empty, with burst); True if any job ran.

    rq ends its loop on an unexpected error, and a Redis reset in the middle of finishing a job is one. Unless a
    stop was asked for, the worker starts again (with backoff), so an outage never needs a supervisor.
    """
    # Configuration errors surface at once, not in the retry loop.
    select_queues(queue_names, type_names)
    worker_class_for(worker_class, concurrency)
    wait = 1.0
    ran_any = False
    stop = threading.Event()
    while True:
        try:
            worker = build_worker(
                queue_names=queue_names,
                type_names=type_names,
                worker_class=worker_class,
                name=name,
                concurrency=concurrency,
            )
            connections.close_all()
            ran_any |= bool(
                worker.work(burst=burst, with_scheduler=with_scheduler, max_jobs=max_jobs, logging_level=logging_level)
            )
        except (RedisConnectionError, RedisTimeoutError) as exc:
            logger.warning("Worker cannot reach Redis (%s); starting again in %.0f s", exc, wait)
        else:
            if burst or max_jobs is not None or worker._shutdown_requested_date is not None:
                return ran_any
            logger.warning("Worker loop ended unexpectedly; starting again in %.0f s", wait)
        # Between two lives the worker has no rq signal handlers of its own: a stop request ends it here.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        if stop.wait(wait):
            return ran_any
        wait = min(wait * 2, MAX_REDIS_WAIT_SECONDS)
