"""Where one job's time goes between submit() and its handler's first line, part by part.

bench/peers.py measures the whole: single submit() calls, and the end-to-end latency with an idle worker. This
script takes the same path apart, in one process, so that the targets can be set against what their parts cost
on this machine right now:

- the floors: a database round trip (SELECT 1), a durable one-row INSERT (autocommit: one WAL flush on
  PostgreSQL), a Redis round trip (PING);
- submit(): the whole call, and inside it the job's row and "submitted" event (one INSERT statement on
  PostgreSQL), its push to rq (one script call), and the rest (checks, validation, building the row);
- what an idle pool worker (``jobs_worker --concurrency N``) does once its blocking pop has returned: the claim
  (one script call), the start (one SQL statement), and handing the attempt to a handler thread.

The worker's steps run here one after another in this process, with the pool worker's own functions; the pop's
wake-up and the worker loop's bookkeeping are not in them (peers.py's latency includes both). Between samples the
script idles 10-50 ms, as peers.py's latency phase does.

    .venv/bin/python bench/latency_parts.py                 # PostgreSQL (BENCH_DATABASE_URL), 300 samples
    .venv/bin/python bench/latency_parts.py --samples 1000

Starts a private redis-server on a free loopback port; uses the bench's PostgreSQL database (created and
migrated if missing), and deletes the jobs it made at the end.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.in_process import django_with_private_redis  # noqa: E402
from bench.peers import percentile  # noqa: E402

Samples = dict[str, list[float]]


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
    """As between peers.py's latency samples: long enough for the processes on the other end to fall asleep."""
    time.sleep(random.uniform(0.01, 0.05))


def floors(samples: Samples, count: int) -> None:
    """Single round trips, each after an idle pause, as every step of a lone job comes after one."""
    from django.db import connection

    from jobs.queues import get_connection

    redis = get_connection()
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_parts_probe (x integer)")
        try:
            for i in range(count):
                idle()
                timed(samples, "database round trip (SELECT 1)", cursor.execute)("SELECT 1")
                idle()
                timed(samples, "durable one-row INSERT (autocommit)", cursor.execute)(
                    "INSERT INTO bench_parts_probe VALUES (%s)", [i]
                )
                if connection.vendor == "postgresql":
                    idle()
                    timed(samples, "the same, not waiting for the WAL flush", cursor.execute)(
                        "INSERT INTO bench_parts_probe SELECT %s WHERE set_config('synchronous_commit', 'off', true)"
                        " IS NOT NULL",
                        [i],
                    )
                idle()
                timed(samples, "Redis round trip (PING)", redis.ping)()
                redis.ping()
                timed(samples, "Redis round trip right after another", redis.ping)()
        finally:
            cursor.execute("DROP TABLE bench_parts_probe")


def time_submit_parts(samples: Samples) -> None:
    """From now on, submit()'s INSERT and push add their durations to ``samples``."""
    from jobs import queues, services

    # submit() calls these through its modules' globals, so the wrapped ones are what it runs.
    services._insert_with_event = timed(samples, "  its row and event (INSERT)", services._insert_with_event)
    queues.push_submitted = timed(samples, "  its push to rq", queues.push_submitted)


def job_path(samples: Samples, count: int) -> list[str]:
    """``count`` jobs from submit() to their handler thread, one at a time; returns their ids."""
    from jobs import batches, queues, services

    rq_queue_names = queues.queue_names(["bench"])
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-handler")
    pool.submit(lambda: None).result()  # the thread exists before the first sample, as in a running worker
    ids = []
    for _ in range(count):
        idle()
        job = timed(samples, "submit(): the whole call", services.submit)("bench-noop", {"total": 0})
        ids.append(str(job.pk))
        claims = timed(samples, "claim (one script call)", queues.claim_jobs)(
            rq_queue_names, 1, worker_name="bench-parts", alive_seconds=30
        )
        attempts, skipped = timed(samples, "start (one SQL statement)", batches.start_many)(claims, "bench-parts")
        if len(attempts) != 1 or skipped:
            raise RuntimeError(f"job {job.pk} did not start: {attempts!r}, skipped {skipped!r}")
        first_line = threading.Event()
        handed_at = time.perf_counter()
        pool.submit(first_line.set)
        first_line.wait()
        samples.setdefault("hand-off to a handler thread", []).append((time.perf_counter() - handed_at) * 1000)
    pool.shutdown()
    return ids


def rest_of_submit(samples: Samples) -> None:
    parts = ("submit(): the whole call", "  its row and event (INSERT)", "  its push to rq")
    whole, insert, push = (samples[part] for part in parts)
    samples["  the rest (checks, validation, the row)"] = [
        w - i - p for w, i, p in zip(whole, insert, push, strict=True)
    ]


def report(samples: Samples, database: str) -> None:
    width = max(len(part) for part in samples) + 2
    print(f"\n{'part (' + database + ')':<{width}} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}")
    print("-" * (width + 24))
    order = [
        "database round trip (SELECT 1)",
        "durable one-row INSERT (autocommit)",
        "the same, not waiting for the WAL flush",
        "Redis round trip (PING)",
        "Redis round trip right after another",
        "submit(): the whole call",
        "  its row and event (INSERT)",
        "  its push to rq",
        "  the rest (checks, validation, the row)",
        "claim (one script call)",
        "start (one SQL statement)",
        "hand-off to a handler thread",
    ]
    print("after an idle pause:")
    for part in order:
        if part not in samples:
            continue
        values = samples[part]
        if part == "claim (one script call)":
            print("an idle pool worker, after its pop returns:")
        print(
            f"{part:<{width}} {percentile(values, 50):7.3f} {percentile(values, 90):7.3f} {percentile(values, 99):7.3f}"
        )
    path = [
        "submit(): the whole call",
        "claim (one script call)",
        "start (one SQL statement)",
        "hand-off to a handler thread",
    ]
    total = sum(percentile(samples[part], 50) for part in path)
    print("-" * (width + 24))
    print(f"{'sum of the p50s: submit, claim, start, hand-off':<{width}} {total:7.3f}")
    print("the issue's targets: submit() p50 0.6 ms; submit to handler start p50 1.5 ms, p99 4 ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300, help="jobs taken apart (default 300)")
    args = parser.parse_args()
    if args.samples < 1:
        parser.error("--samples must be at least 1")

    with django_with_private_redis():
        from django.db import connection

        from jobs.models import JobLog

        samples: Samples = {}
        time_submit_parts(samples)
        ids = job_path(samples, 20)  # warm-up: connections made, statements and scripts cached
        samples.clear()
        floors(samples, args.samples)
        ids += job_path(samples, args.samples)
        rest_of_submit(samples)
        JobLog.objects.filter(pk__in=ids).delete()
        report(samples, connection.vendor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
