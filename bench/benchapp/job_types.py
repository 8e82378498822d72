"""Our side of the benchmark: the same marker calls as the peers' tasks (bench/peer_tasks/marker.py)."""

from __future__ import annotations

from typing import Any

from bench.peer_tasks import marker
from jobs import job_type


@job_type("bench-noop", queue="bench")
def noop(ctx: Any, payload: dict[str, Any]) -> None:
    marker.done(payload["total"])


@job_type("bench-sleep", queue="bench")
def sleep(ctx: Any, payload: dict[str, Any]) -> None:
    marker.sleep_then_done(payload["total"], payload["seconds"])


@job_type("bench-ping", queue="bench")
def ping(ctx: Any, payload: dict[str, Any]) -> None:
    marker.ping(payload["seq"])
