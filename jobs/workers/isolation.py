"""Attempts of types declared ``isolation="process"``: the handler runs in a forked child of the worker process.

The child runs the handler and nothing else: its progress, per-item failures and outcome travel to its parent
through a pipe (JSON lines), and a cancel request comes back through a shared byte. The parent, in the slot thread
that forked it, records everything as for any attempt. Stopping the child is a SIGKILL, which works whatever the
handler runs; a child that ends without an outcome (killed, crashed) fails its attempt with WorkerLost.

The worker process has other threads when it forks. The child touches only the handler and the pipe: the
forking thread's database connections are closed first, so it inherits none in use (psycopg leaves its parent's
alone in a forked child), and it leaves with os._exit, running no exit handler of its parent's.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import mmap
import os
import select
import signal
import threading
import traceback
import warnings
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections

from ..exceptions import InvalidPayload, JobTimeout, WorkerLost
from ..live.context import JobContext
from .guard import AttemptGuard
from .runner import Attempt, ReportedFailure, ResultNotSerializable, to_json

READ_TIMEOUT = 0.05  # seconds between looks at the parent's cancel flag while the child is quiet
_forking = threading.Lock()


class ChildInterrupter:
    """Stops an isolated handler: its child is killed, whatever it runs."""

    def __init__(self) -> None:
        self.pid: int | None = None

    def raise_in_handler(self, exc_type: type[BaseException]) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it ended on its own meanwhile

    def clear(self) -> None:
        pass


def run_isolated(attempt: Attempt, guard: AttemptGuard, interrupter: ChildInterrupter) -> None:
    """Run the attempt in a forked child; keep its result or error on the attempt."""
    try:
        payload = attempt.job_type.clean(attempt.job.payload)
    except InvalidPayload as exc:  # fails like in any slot, without a fork
        attempt.error = exc
        guard.stop()
        return
    cancel_flag = mmap.mmap(-1, 1)
    connections.close_all()  # this thread's connections only: the child must inherit none in use
    # One fork at a time in this process, from the pipe's creation until the parent closed its write end: a child
    # forked meanwhile by another slot would inherit that write end, and this child's end of file would wait for it.
    with _forking:
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12 warns about forking a process with threads; the child avoids what they hold (see above).
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*fork\(\)")
            pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _child(attempt, payload, write_end, cancel_flag)  # never returns
        os.close(write_end)
    interrupter.pid = pid
    if guard.interrupted_with is not None:  # interrupted before the child existed
        interrupter.raise_in_handler(guard.interrupted_with)
    try:
        outcome = _relay(attempt, read_end, cancel_flag)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
        interrupter.pid = None
        cancel_flag.close()
        guard.stop()
    if outcome is not None:
        return
    if guard.interrupted_with is not None:
        attempt.error = guard.interrupted_with()
    else:
        attempt.error = WorkerLost(f"The process running this job {_ended(status)} before it reported an outcome.")


def _relay(attempt: Attempt, read_end: int, cancel_flag: mmap.mmap) -> dict[str, Any] | None:
    """Apply the child's messages until its end of the pipe closes; returns its outcome message, if any."""
    buffered = b""
    outcome = None
    while True:
        if attempt.ctx.is_canceled() and cancel_flag[0] == 0:
            cancel_flag[0] = 1
        readable, _, _ = select.select([read_end], [], [], READ_TIMEOUT)
        if not readable:
            continue
        chunk = os.read(read_end, 65536)
        if not chunk:
            return outcome
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        for line in lines:
            message = json.loads(line)
            attempt.ctx.apply(message["progress"], final="result" in message or "error" in message)
            if "result" in message:
                outcome, attempt.result = message, message["result"]
            elif "error" in message:
                outcome, error = message, message["error"]
                attempt.error = ReportedFailure(error["type"], error["message"], error["traceback"], error["retryable"])


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


class _ChildContext(JobContext):
    """The handler's context in the child: progress goes through the pipe, the cancel flag comes from the parent."""

    def __init__(self, attempt: Attempt, write_end: int, cancel_flag: mmap.mmap) -> None:
        super().__init__(attempt.job, attempt.ctx.attempt)
        self._write_end = write_end
        self._cancel_flag = cancel_flag

    def is_canceled(self) -> bool:
        return self._cancel_flag[0] == 1

    def publish_pending(self, *, older_than: float = 0.0) -> None:
        if self._unpublished:
            self._unpublished = False
            self.send({})

    def flush(self) -> None:
        self._dirty = False  # the parent writes what publish_pending() sent

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps({**message, "progress": self.progress_fields()}, cls=DjangoJSONEncoder) + "\n").encode()
        while data:
            data = data[os.write(self._write_end, data) :]


def _child(attempt: Attempt, payload: dict[str, Any], write_end: int, cancel_flag: mmap.mmap) -> None:
    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
        ctx = _ChildContext(attempt, write_end, cancel_flag)
        try:
            result = attempt.job_type.handler(ctx, payload)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
            ctx.send({"result": to_json(result)})
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which concludes the attempt
            retryable = (
                isinstance(exc, Exception | JobTimeout)
                and not isinstance(exc, ResultNotSerializable)
                and attempt.job_type.should_retry(exc)
            )
            error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__}
            error |= {"traceback": "".join(traceback.format_exception(exc)), "retryable": retryable}
            ctx.send({"error": error})
    except BaseException:  # noqa: BLE001 - nothing may escape into the parent's code
        code = 1
    finally:
        os._exit(code)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
