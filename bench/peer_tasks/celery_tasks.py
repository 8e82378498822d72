"""Celery tasks on a Redis broker, no result backend (results ignored), Celery's defaults otherwise."""

from __future__ import annotations

import os

from celery import Celery

from bench.peer_tasks import marker

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    task_ignore_result=True,
    task_default_queue="bench",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(total: int) -> None:
    marker.done(total)


@app.task(name="bench.sleep")
def sleep(total: int, seconds: float) -> None:
    marker.sleep_then_done(total, seconds)


@app.task(name="bench.ping")
def ping(seq: int) -> None:
    marker.ping(seq)
