"""Where a worker process runs its handlers: threads for sync handlers, one event loop for ``async def`` ones.

A type with ``isolation="process"`` takes a thread too: the thread forks the child that runs the handler, then
relays what the child reports until it ends (workers.isolation). Database connections belong to threads and are
closed around every job, like a request's.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable
from functools import partial

from django.db import close_old_connections, connections

from .guard import AttemptGuard, TaskInterrupter, ThreadInterrupter, Watcher
from .isolation import ChildInterrupter, run_isolated
from .runner import Attempt, call_async_handler, call_handler

logger = logging.getLogger(__name__)


class Slots:
    """``concurrency`` handler threads and one event loop; ``on_done`` hears of every attempt whose handler ended."""

    def __init__(self, concurrency: int, watcher: Watcher, on_done: Callable[[Attempt], None]) -> None:
        self._watcher = watcher
        self._on_done = on_done
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"jobs-run-{index}", daemon=True) for index in range(concurrency)
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def run(self, attempt: Attempt) -> None:
        """Start the attempt's handler now (the caller counted its slot)."""
        attempt.dispatched_at = time.monotonic()
        if attempt.job_type.isolation == "process":
            self._tasks.put(partial(self._isolated, attempt))
        elif inspect.iscoroutinefunction(attempt.job_type.handler):
            self._start_async(attempt)
        else:
            self._tasks.put(partial(self._in_thread, attempt))

    def close(self) -> None:
        """Stop the threads once their current handlers returned, and the event loop."""
        for _thread in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
            if not self._loop.is_running():
                self._loop.close()

    def _serve(self) -> None:
        try:
            while (task := self._tasks.get()) is not None:
                task()
        finally:
            connections.close_all()

    def _deadline(self, attempt: Attempt) -> float:
        return time.monotonic() + attempt.claim.timeout

    def _in_thread(self, attempt: Attempt) -> None:
        close_old_connections()
        try:
            guard = attempt.guard = AttemptGuard(
                attempt.ctx, ThreadInterrupter(threading.get_ident()), self._deadline(attempt)
            )
            self._watcher.add(guard)
            call_handler(attempt, guard)
        except BaseException as exc:  # noqa: BLE001 - an interrupt that landed outside the handler
            attempt.error = attempt.error or exc
        finally:
            close_old_connections()
            self._on_done(attempt)

    def _isolated(self, attempt: Attempt) -> None:
        try:
            interrupter = ChildInterrupter()
            guard = attempt.guard = AttemptGuard(attempt.ctx, interrupter, self._deadline(attempt))
            self._watcher.add(guard)
            run_isolated(attempt, guard, interrupter)
        except Exception as exc:  # noqa: BLE001 - the fork itself failed (out of memory, too many processes)
            logger.exception("Job %s: could not run it in a child process", attempt.ctx.job_id)
            attempt.error = attempt.error or exc
        finally:
            close_old_connections()
            self._on_done(attempt)

    def _start_async(self, attempt: Attempt) -> None:
        loop = self._event_loop()
        interrupter = TaskInterrupter(loop)
        guard = attempt.guard = AttemptGuard(attempt.ctx, interrupter, self._deadline(attempt))
        try:
            payload = attempt.job_type.clean(attempt.job.payload)
        except Exception as exc:  # noqa: BLE001 - an invalid payload fails like any handler error
            guard.stop()
            attempt.error = exc
            self._on_done(attempt)
            return
        self._watcher.add(guard)

        async def run() -> None:
            interrupter.task = asyncio.current_task()
            try:
                await call_async_handler(attempt, guard, payload)
            finally:
                self._on_done(attempt)

        asyncio.run_coroutine_threadsafe(run(), loop)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:  # the claim loop and a handler's thread (a held job's dispatch) may both start it
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(target=self._loop.run_forever, name="jobs-loop", daemon=True)
                self._loop_thread.start()
            return self._loop
