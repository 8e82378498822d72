"""Dramatiq actors on its Redis broker, Dramatiq's default middleware, no retries (nothing fails here)."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peer_tasks import marker

dramatiq.set_broker(RedisBroker(url=os.environ["BENCH_REDIS_URL"]))


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop(total: int) -> None:
    marker.done(total)


@dramatiq.actor(queue_name="bench", max_retries=0)
def sleep(total: int, seconds: float) -> None:
    marker.sleep_then_done(total, seconds)


@dramatiq.actor(queue_name="bench", max_retries=0)
def ping(seq: int) -> None:
    marker.ping(seq)
