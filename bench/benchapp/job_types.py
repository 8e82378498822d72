"""The benchmarks' job types. The bench-* ones make the same marker calls as the peers' tasks
(bench/peer_tasks/marker.py); the others serve the API, progress and soak benchmarks."""

from __future__ import annotations

import os
import time
from typing import Any

from bench.peer_tasks import marker
from jobs import job_type


@job_type("bench-noop", queue="bench")
def noop(ctx: Any, payload: dict[str, Any]) -> None:
    marker.done(payload["total"])


@job_type("bench-isolated-noop", queue="bench", isolation="process")
def isolated_noop(ctx: Any, payload: dict[str, Any]) -> None:
    marker.done(payload["total"])


@job_type("bench-sleep", queue="bench")
def sleep(ctx: Any, payload: dict[str, Any]) -> None:
    marker.sleep_then_done(payload["total"], payload["seconds"])


@job_type("bench-ping", queue="bench")
def ping(ctx: Any, payload: dict[str, Any]) -> None:
    marker.ping(payload["seq"])


@job_type("bench-echo", queue="bench-api")
def echo(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    ctx.progress(50, "echoing", stage="echo")
    return {"echo": payload, "attempt": ctx.attempt, "job_id": ctx.job_id}


@job_type("bench-chatty", queue="bench-api")
def chatty(ctx: Any, payload: dict[str, Any]) -> int:
    """Reports progress in a tight loop."""
    total = payload["calls"]
    for i in range(1, total + 1):
        ctx.progress(100 * i // total, f"item {i}", stage="loop", current=i, total=total)
    return total


@job_type("bench-soak", queue="bench-soak", max_attempts=10, backoff=(0.1, 1), timeout=30)
def soak(ctx: Any, payload: dict[str, Any]) -> int:
    """Writes one line when it starts and one when it finishes, to a file that outlives Redis and workers."""
    path = os.path.join(payload["dir"], f"runs-{os.getpid()}.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"start {ctx.job_id} {ctx.attempt}\n".encode())
        time.sleep(payload.get("work", 0.005))
        os.write(fd, f"done {ctx.job_id} {ctx.attempt}\n".encode())
    finally:
        os.close(fd)
    return ctx.attempt
