"""The completion marker every benchmark task calls: the same few Redis commands for every system.

Per job: one INCR of ``bench:done``. Once per process: one RPUSH to ``bench:starts`` ("pid time count"), so the
orchestrator can start its clock once every worker process is busy. When the count reaches the run's total: one
RPUSH of the time to ``bench:finished``. The latency task RPUSHes "seq time" to ``bench:lat`` as its first action.
bench.peers subtracts exactly these commands from the Redis command counts it reports.
"""

from __future__ import annotations

import os
import threading
import time

from redis import Redis

DONE = "bench:done"
STARTS = "bench:starts"
FINISHED = "bench:finished"
LATENCY = "bench:lat"

_conns: dict[int, Redis] = {}
_started: set[int] = set()
_lock = threading.Lock()


def _after_fork() -> None:
    # A child forked while another thread held the lock (a job isolated in a process) must not wait for it.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def _redis() -> Redis:
    pid = os.getpid()  # forked pool children (Celery prefork, rq worker-pool) get their own connection
    conn = _conns.get(pid)
    if conn is None:
        with _lock:
            conn = _conns.get(pid)
            if conn is None:
                conn = _conns[pid] = Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return conn


def done(total: int) -> None:
    """Count one finished job."""
    conn = _redis()
    count = conn.incr(DONE)
    now = time.time()
    pid = os.getpid()
    if pid not in _started:
        with _lock:
            first = pid not in _started
            _started.add(pid)
        if first:
            conn.rpush(STARTS, f"{pid} {now} {count}")
    if count == total:
        conn.rpush(FINISHED, now)


def ping(seq: int) -> None:
    """Say when the handler started, for the latency measurement."""
    _redis().rpush(LATENCY, f"{seq} {time.time()}")


def sleep_then_done(total: int, seconds: float) -> None:
    time.sleep(seconds)
    done(total)
