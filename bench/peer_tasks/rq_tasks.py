"""Plain rq tasks (rq's defaults: pickle serializer, results kept 500 s)."""

from __future__ import annotations

from bench.peer_tasks import marker


def noop(total: int) -> None:
    marker.done(total)


def sleep(total: int, seconds: float) -> None:
    marker.sleep_then_done(total, seconds)


def ping(seq: int) -> None:
    marker.ping(seq)
