"""Stopping a running handler: its guard (cancel requests, timeout, shutdown) and the watcher that ticks them all.

A stop goes in three steps. First the handler is told (``ctx.is_canceled()``); a handler still running
CANCEL_GRACE seconds after a cancel request, or past its timeout, or at the end of a shutdown's grace, then gets an
exception raised inside it (in its thread, or as its task's cancellation, or its forked child is killed). A
handler blocked in C never sees that exception: CANCEL_GRACE seconds later its guard says it is stuck, and the
process that hosts it ends (workers.process), which stops it whatever it runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..conf import jobs_settings
from ..exceptions import JobCanceled, JobTimeout
from ..live.context import JobContext
from ..transport import queues as transport
from ..transport.connections import TransportError

logger = logging.getLogger(__name__)


class Interrupter(Protocol):
    def raise_in_handler(self, exc_type: type[BaseException]) -> None: ...

    def clear(self) -> None: ...


class ThreadInterrupter:
    """Raises an exception inside the thread running a sync handler (it lands at the thread's next bytecode)."""

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id

    def raise_in_handler(self, exc_type: type[BaseException]) -> None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id), ctypes.py_object(exc_type))

    def clear(self) -> None:
        # The exception may still be pending; clear it so it cannot hit the engine's own code in this thread.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id), None)


class TaskInterrupter:
    """Cancels the task of an ``async def`` handler; the guard remembers what the cancellation stands for."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.task: asyncio.Task[Any] | None = None

    def raise_in_handler(self, exc_type: type[BaseException]) -> None:
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)

    def clear(self) -> None:
        pass  # a task that already ended ignores cancel()


class AttemptGuard:
    """Cancel requests, progress flushes, the timeout and the stop of one running handler."""

    def __init__(self, ctx: JobContext, interrupter: Interrupter, deadline: float | None = None) -> None:
        self.ctx = ctx
        self.interrupter = interrupter
        self.deadline = deadline  # time.monotonic()
        self.interrupted_with: type[BaseException] | None = None
        self.interrupted_at: float | None = None
        self._done = False  # the handler returned: never interrupt it again
        self._lock = threading.Lock()
        self._canceled_at: float | None = None
        settings = jobs_settings()
        self._grace = settings.CANCEL_GRACE
        self._publish_every = settings.PROGRESS_PUBLISH_INTERVAL

    @property
    def done(self) -> bool:
        return self._done

    def tick(self, now: float, cancel_requested: bool) -> None:
        """Look after the handler once; ``cancel_requested``: whether Redis holds a cancel mark for it."""
        if self._done:
            return
        # A handler that went quiet after a burst still gets its latest progress out.
        self.ctx.publish_pending(older_than=self._publish_every)
        if self._canceled_at is None and cancel_requested:
            self._canceled_at = now
            self.ctx.mark_canceled()
        if self.deadline is not None and now >= self.deadline:
            self.interrupt(JobTimeout)
        elif self._canceled_at is not None and now - self._canceled_at >= self._grace:
            self.interrupt(JobCanceled)

    def interrupt(self, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` inside the handler if it is still running and was not interrupted yet."""
        with self._lock:
            if self._done or self.interrupted_with is not None:
                return False
            self.interrupted_with, self.interrupted_at = exc_type, time.monotonic()
            self.interrupter.raise_in_handler(exc_type)
            return True

    def stuck(self, now: float) -> bool:
        """Interrupted CANCEL_GRACE seconds ago and still running: blocked where no exception reaches it."""
        return not self._done and self.interrupted_at is not None and now - self.interrupted_at >= self._grace

    def stop(self) -> None:
        """The handler is done."""
        with self._lock:
            self._done = True
            if self.interrupted_with is not None:
                self.interrupter.clear()


class Watcher(threading.Thread):
    """One thread for every attempt of a process: liveness beats and cancel marks for all of them in one round
    trip, progress flushes, timeouts and stops; ``on_stuck`` hears of a handler no exception could stop."""

    def __init__(self, on_stuck: Callable[[AttemptGuard], None], on_tick: Callable[[], None]) -> None:
        super().__init__(name="jobs-watch", daemon=True)
        self._on_stuck = on_stuck
        self._on_tick = on_tick
        self._guards: dict[str, AttemptGuard] = {}
        self._held: set[str] = set()  # started jobs waiting for a free slot: beaten, not guarded yet
        # Reentrant: the SIGTERM handler reads the guards in the main thread, which may be inside hold() then.
        self._lock = threading.RLock()
        self._closed = threading.Event()
        settings = jobs_settings()
        self._poll = settings.CANCEL_POLL_INTERVAL
        self._beat_every = settings.HEARTBEAT_INTERVAL

    def hold(self, job_id: str) -> None:
        with self._lock:
            self._held.add(job_id)

    def add(self, guard: AttemptGuard) -> None:
        with self._lock:
            self._held.discard(guard.ctx.job_id)
            self._guards[guard.ctx.job_id] = guard

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._held.discard(job_id)
            self._guards.pop(job_id, None)

    def guards(self) -> list[AttemptGuard]:
        with self._lock:
            return list(self._guards.values())

    def run(self) -> None:
        next_beat = time.monotonic() + self._beat_every  # the claim set every liveness key
        while not self._closed.wait(self._poll):
            self._on_tick()
            with self._lock:
                guards, held = list(self._guards.values()), list(self._held)
            now = time.monotonic()
            beat = now >= next_beat
            if not guards and not (beat and held):
                continue
            # Held jobs only need their liveness kept; a cancel mark waits in Redis for their guard's first tick.
            ids = [guard.ctx.job_id for guard in guards] + (held if beat else [])
            try:
                marks = transport.beat_and_check_cancel(ids, self._beat_every * 3 if beat else None)
                if beat:
                    next_beat = now + self._beat_every
            except TransportError:
                # Redis away: the jobs run on and timeouts still hold; beats and cancel marks resume later.
                logger.warning("Redis unavailable to the watcher", exc_info=True)
                marks = [False] * len(ids)
            for guard, cancel_requested in zip(guards, marks[: len(guards)], strict=True):
                try:
                    guard.tick(now, cancel_requested)
                    if guard.stuck(now):
                        self._on_stuck(guard)
                except Exception:  # noqa: BLE001 - one job's trouble must not stop the watch over the others
                    logger.exception("Job %s: watcher tick failed", guard.ctx.job_id)

    def close(self) -> None:
        self._closed.set()
