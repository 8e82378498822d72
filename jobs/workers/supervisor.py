"""``manage.py jobs_worker``: a supervisor that keeps ``--processes`` worker processes alive.

The supervisor forks its children while it has no thread of its own, so each starts clean, and restarts any that
dies (a crash, or a process that ended itself because a handler could not be stopped). It forwards SIGTERM and
SIGINT and waits for the children's warm shutdown. It also runs, once per host, what rq's worker would run
besides jobs: rq's scheduler for delayed jobs and rq's registry maintenance. A child whose watcher stopped
beating for HUNG_AFTER seconds (a handler holding the interpreter in C) is killed; the reconciler recovers its jobs.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import socket
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connections

from .. import registry
from ..conf import jobs_settings
from ..exceptions import JobsError
from ..transport import queues as transport
from ..transport.connections import TransportError, Unreachable, get_connection
from ..transport.worker import DelayedJobs, clean
from .process import EXIT_STUCK, WorkerProcess, retry_while_unreachable

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2
SCHEDULER_TICK_SECONDS = 1.0
MAINTENANCE_SECONDS = 30.0
HUNG_AFTER = 60.0
MAX_RESTART_WAIT = 30.0
HEALTHY_AFTER = 60.0  # a process that ran this long before it died starts its restart backoff afresh


class WorkerConfigError(JobsError):
    """The worker cannot start with these options."""

    code = "worker_config"


@dataclass(frozen=True)
class WorkerOptions:
    queues: Sequence[str] = ()
    types: Sequence[str] = ()
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    concurrency: int = 8
    name: str | None = None
    burst: bool = False
    max_jobs: int | None = None  # per process
    with_scheduler: bool = True


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
    return transport.queue_names(chosen or known)


def check(options: WorkerOptions) -> list[str]:
    """Validate the options; returns the rq queue names to serve."""
    if options.processes < 1:
        raise WorkerConfigError("--processes must be 1 or more.")
    if options.concurrency < 1:
        raise WorkerConfigError("--concurrency must be 1 or more.")
    if options.max_jobs is not None and options.max_jobs < 1:
        raise WorkerConfigError("--max-jobs must be 1 or more.")
    return select_queues(options.queues, options.types)


def run_worker(options: WorkerOptions) -> None:
    """Run the supervisor until SIGTERM or SIGINT (or, with burst or max_jobs, until every process is done)."""
    Supervisor(options, check(options)).run()


def run_in_process(options: WorkerOptions) -> int:
    """One worker process's loop in the calling process, without a supervisor (tests, benchmarks, scripts);
    returns how many jobs it took. ``options.processes`` is ignored."""
    name = f"{(options.name or socket.gethostname())[:150]}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    process = WorkerProcess(
        check(options), concurrency=options.concurrency, name=name, with_scheduler=options.with_scheduler
    )
    return process.run(burst=options.burst, max_jobs=options.max_jobs)


class Supervisor:
    def __init__(self, options: WorkerOptions, rq_queue_names: list[str]) -> None:
        self.options = options
        self.rq_queue_names = rq_queue_names
        self.base_name = (options.name or socket.gethostname())[:150]
        self._children: dict[int, int] = {}  # pid -> slot
        self._restart_wait = [0.0] * options.processes
        self._restart_at = [0.0] * options.processes
        self._started_at = [0.0] * options.processes
        self._done = [False] * options.processes
        # One monotonic timestamp per slot, written by its child's watcher: a frozen one means a hung child.
        self._beats = mmap.mmap(-1, 8 * options.processes)
        self._stopping = False
        self._pid = os.getpid()

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request_stop)
        if not self._wait_for_redis():
            return
        delayed = DelayedJobs(self.rq_queue_names) if self.options.with_scheduler else None
        next_tick = next_maintenance = time.monotonic()
        try:
            while not self._stopping:
                now = time.monotonic()
                self._reap()
                self._start_missing(now)
                if not self._children and all(self._done):
                    break  # burst or max_jobs: every process finished
                self._kill_hung(now)
                try:
                    if delayed is not None and now >= next_tick:
                        next_tick = now + SCHEDULER_TICK_SECONDS
                        delayed.tick()
                    if now >= next_maintenance:
                        next_maintenance = now + MAINTENANCE_SECONDS
                        clean(self.rq_queue_names)
                except TransportError as exc:
                    logger.warning("Redis unavailable to the supervisor (%s)", exc)
                time.sleep(POLL_SECONDS)
            self._stop_children()
        finally:
            if delayed is not None:
                try:
                    delayed.close()
                except TransportError:
                    pass

    def _wait_for_redis(self) -> bool:
        """Wait for Redis (starting the embedded one before the forks); False if told to stop meanwhile."""
        try:
            retry_while_unreachable(lambda: get_connection().ping(), lambda: self._stopping)
        except Unreachable:
            return False
        return not self._stopping

    def _request_stop(self, signum: int, frame: Any) -> None:
        self._stopping = True

    def _start_missing(self, now: float) -> None:
        running = set(self._children.values())
        for slot in range(self.options.processes):
            if slot in running or self._done[slot] or now < self._restart_at[slot]:
                continue
            self._write_beat(slot)
            connections.close_all()  # a child must not share the supervisor's database sockets
            pid = os.fork()
            if pid == 0:
                self._child(slot)
            self._children[pid] = slot
            self._started_at[slot] = time.monotonic()

    def _child(self, slot: int) -> None:
        code = 1
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            process = WorkerProcess(
                self.rq_queue_names,
                concurrency=self.options.concurrency,
                name=f"{self.base_name}.{os.getpid()}",
                supervisor=self._pid,
                on_beat=lambda: self._write_beat(slot),
            )
            process.run(burst=self.options.burst, max_jobs=self.options.max_jobs)
            code = 0
        except BaseException:  # noqa: BLE001 - the supervisor sees the exit code and starts a fresh one
            logger.exception("Worker process %s failed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._children.clear()
                return
            if pid == 0:
                return
            slot = self._children.pop(pid, None)
            if slot is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if code == 0 and (self.options.burst or self.options.max_jobs is not None):
                self._done[slot] = True
            elif not self._stopping:
                # A process that ended itself over a stuck handler is replaced at once; one that crashes again soon
                # after its start with growing backoff, one that ran a while as if it were the first crash.
                lived = time.monotonic() - self._started_at[slot]
                backoff = 0.0 if lived > HEALTHY_AFTER else self._restart_wait[slot]
                wait = 0.0 if code == EXIT_STUCK else min(MAX_RESTART_WAIT, max(1.0, 2 * backoff))
                self._restart_wait[slot] = wait
                self._restart_at[slot] = time.monotonic() + wait
                logger.warning("Worker process %s ended (exit code %s); starting another in %.0f s", pid, code, wait)

    def _write_beat(self, slot: int) -> None:
        struct.pack_into("d", self._beats, 8 * slot, time.monotonic())

    def _kill_hung(self, now: float) -> None:
        for pid, slot in list(self._children.items()):
            (beat,) = struct.unpack_from("d", self._beats, 8 * slot)
            if now - beat > HUNG_AFTER:
                logger.error("Worker process %s stopped responding for %.0f s; killing it", pid, now - beat)
                self._write_beat(slot)
                os.kill(pid, signal.SIGKILL)

    def _stop_children(self) -> None:
        for pid in self._children:
            os.kill(pid, signal.SIGTERM)
        settings = jobs_settings()
        deadline = time.monotonic() + settings.SHUTDOWN_GRACE + 2 * settings.CANCEL_GRACE + 10
        while self._children and time.monotonic() < deadline:
            self._reap()
            time.sleep(POLL_SECONDS)
        for pid in self._children:
            logger.error("Worker process %s did not stop in time; killing it", pid)
            os.kill(pid, signal.SIGKILL)
        while self._children:
            self._reap()
            time.sleep(POLL_SECONDS / 4)
