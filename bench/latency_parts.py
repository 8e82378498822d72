"""Where one job's time goes between submit() and its handler's first line, part by part.

    python -m bench.latency_parts                 # PostgreSQL (BENCH_DATABASE_URL, default jobs_bench), 300 samples
    python -m bench.latency_parts --samples 1000

bench.peers measures the whole (submit() calls, and the latency from submit to handler start with an idle worker);
this takes the same path apart in one process, each step after a 10-50 ms idle pause as in that phase:

- the floors: a database round trip (SELECT 1), a durable one-row INSERT (autocommit: one WAL flush), the same
  not waiting for the flush, a Redis round trip (PING), and one right after another;
- submit(): the whole call; inside it the row and its event with their commit (lifecycle.queue_new less the push),
  the push to rq (jobs.transport.queues.push), and the rest (checks, validation, building the row);
- what a worker process does once its blocking pop returned: the claim (one script call), the start (one SQL
  statement, lifecycle.start), and handing the attempt to a handler thread.

The pop's wake-up and the worker loop's bookkeeping are not in them. Starts a private redis-server and empties the
job tables before and after.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import Report, percentile

Samples = dict[str, list[float]]
WHOLE, ROWS, PUSH, REST = (
    "submit(): the whole call",
    "  its row, event, commit and live frame",
    "  its push to rq",
    "  the rest (checks, validation, the row)",
)
CLAIM, START, HANDOFF = "claim (one script call)", "start (one SQL statement)", "hand-off to a handler thread"


def timed(samples: Samples, part: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, adding each call's duration (ms) to ``samples[part]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            samples.setdefault(part, []).append((time.perf_counter() - started) * 1000)

    return wrapper


def idle() -> None:
    """As between bench.peers' latency samples: long enough for the processes on the other end to fall asleep."""
    time.sleep(random.uniform(0.01, 0.05))


def floors(samples: Samples, count: int) -> None:
    from django.db import connection

    from jobs.transport.connections import get_connection

    redis = get_connection()
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_parts_probe (x integer)")
        try:
            for i in range(count):
                idle()
                timed(samples, "database round trip (SELECT 1)", cursor.execute)("SELECT 1")
                idle()
                insert = "INSERT INTO bench_parts_probe VALUES (%s)"
                timed(samples, "durable one-row INSERT (autocommit)", cursor.execute)(insert, [i])
                idle()
                relaxed = insert.replace("VALUES (%s)", "SELECT %s WHERE set_config('synchronous_commit', 'off', true)")
                timed(samples, "the same, not waiting for the WAL flush", cursor.execute)(relaxed + " IS NOT NULL", [i])
                idle()
                timed(samples, "Redis round trip (PING)", redis.ping)()
                redis.ping()
                timed(samples, "Redis round trip right after another", redis.ping)()
        finally:
            cursor.execute("DROP TABLE bench_parts_probe")


def time_submit_parts(samples: Samples) -> None:
    """From now on, submit()'s parts add their durations to ``samples``."""
    from jobs import lifecycle
    from jobs.transport import queues

    # submit() reaches these through their modules, so the wrapped ones are what it runs.
    lifecycle.queue_new = timed(samples, "queue_new", lifecycle.queue_new)  # type: ignore[method-assign]
    queues.push = timed(samples, PUSH, queues.push)  # type: ignore[method-assign]


def job_path(samples: Samples, count: int) -> None:
    """``count`` jobs from submit() to their handler thread, one at a time."""
    from jobs import lifecycle, services
    from jobs.transport import queues

    rq_queue_names = queues.queue_names(["bench"])
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-handler")
    pool.submit(lambda: None).result()  # the thread exists before the first sample, as in a running worker
    for _ in range(count):
        idle()
        job = timed(samples, WHOLE, services.submit)("bench-noop", {"total": 0})
        claims = timed(samples, CLAIM, queues.claim)(rq_queue_names, 1, worker_name="bench-parts", alive_seconds=30)
        started = timed(samples, START, lifecycle.start)([uuid.UUID(c.job_id) for c in claims], "bench-parts")
        if len(started) != 1 or started[0].pk != job.pk:
            raise RuntimeError(f"job {job.pk} did not start: claims {claims!r}, started {started!r}")
        first_line = threading.Event()
        handed_at = time.perf_counter()
        pool.submit(first_line.set)
        first_line.wait()
        samples.setdefault(HANDOFF, []).append((time.perf_counter() - handed_at) * 1000)
    pool.shutdown()


def report_parts(report: Report, samples: Samples) -> None:
    whole, queue_new, push = samples.pop(WHOLE), samples.pop("queue_new"), samples[PUSH]
    samples[WHOLE] = whole
    samples[ROWS] = [q - p for q, p in zip(queue_new, push, strict=True)]
    samples[REST] = [w - q for w, q in zip(whole, queue_new, strict=True)]
    order = [
        "database round trip (SELECT 1)",
        "durable one-row INSERT (autocommit)",
        "the same, not waiting for the WAL flush",
        "Redis round trip (PING)",
        "Redis round trip right after another",
        WHOLE,
        ROWS,
        PUSH,
        REST,
        CLAIM,
        START,
        HANDOFF,
    ]
    rows = []
    for part in order:
        values = samples[part]
        rows.append([part] + [f"{percentile(values, pct):.3f}" for pct in (50, 90, 99)])
    total = sum(percentile(samples[part], 50) for part in (WHOLE, CLAIM, START, HANDOFF))
    rows.append(["sum of the p50s: submit, claim, start, hand-off", f"{total:.3f}", "", ""])
    report.line("Each step after an idle pause; the claim, start and hand-off are a worker process's, after its pop.")
    report.line()
    report.table(["part (PostgreSQL)", "p50 ms", "p90 ms", "p99 ms"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300, help="jobs taken apart (default 300)")
    harness.add_arguments(parser)
    args = parser.parse_args()
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    procs = harness.Processes(Path(tempfile.mkdtemp(prefix="jobs-latency-parts-")))
    report = Report("latency_parts")
    try:
        redis, url = harness.postgres_bench(procs)
        from django.db import connection

        with connection.cursor() as cursor:
            harness.reset_job_tables(cursor)
        report.facts_line(harness.machine_facts(redis=redis, postgres_url=url))
        samples: Samples = {}
        time_submit_parts(samples)
        job_path(samples, 20)  # warm-up: connections made, statements and scripts cached
        samples.clear()
        floors(samples, args.samples)
        job_path(samples, args.samples)
        report_parts(report, samples)
        with connection.cursor() as cursor:
            harness.reset_job_tables(cursor)
        report.save(not args.no_save)
    finally:
        procs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
