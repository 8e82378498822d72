"""Where a forked work horse's time goes: the forking worker (``jobs_worker``, the default) part by part.

The forking worker runs each job in a child process forked from the worker, as rq's Worker does, so a crash or a
hard stop kills only that child. This script does what the worker does per job, in one process: close the database
connections (a child must not share its parent's sockets), fork, run the job with ``run_job`` in the child, wait for
the child to exit. In the child it times:

- the fork itself (the parent's ~150 MB of Django and the app: page tables copied);
- opening a PostgreSQL connection and a Redis connection (the child has none of its own);
- the job's start statement, its handler (a no-op that counts itself done in Redis), its finish statement, and the
  wait for its live frames to be sent;
- and, in the parent, the whole: fork to the child's exit.

    .venv/bin/python bench/horse_parts.py              # PostgreSQL (BENCH_DATABASE_URL), 50 jobs
    .venv/bin/python bench/horse_parts.py --jobs 200

Starts a private redis-server on a free loopback port; uses the bench's PostgreSQL database (created and migrated
if missing), and deletes the jobs it made at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.in_process import django_with_private_redis  # noqa: E402
from bench.peers import percentile  # noqa: E402

PARTS = (
    ("fork", "fork (in the child: from before fork() to its first line)"),
    ("database", "open a PostgreSQL connection"),
    ("redis", "open a Redis connection (PING)"),
    ("start", "start statement (a new database session's first)"),
    ("handler", "handler (no-op, one Redis write)"),
    ("finish", "finish statement"),
    ("flush", "send the live frames (flush_published)"),
    ("child", "in the child, all of the above"),
    ("whole", "in the parent: fork to the child's exit"),
)


def horse(job_id: str, forked_at: float) -> dict[str, float]:
    """The child's side: run_job with its parts timed, in ms."""
    from django.db import connections

    from jobs import queues, runner

    marks = {"fork": time.perf_counter() - forked_at}

    def timed(part: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                marks[part] = marks.get(part, 0.0) + time.perf_counter() - started

        return wrapper

    timed("database", connections["default"].ensure_connection)()
    timed("redis", queues.get_connection().ping)()
    # run_job calls these through its module's globals, so the wrapped ones are what it runs.
    runner.start_attempts = timed("start", runner.start_attempts)
    runner.call_handler = timed("handler", runner.call_handler)
    runner.finish_succeeded = timed("finish", runner.finish_succeeded)
    runner.flush_published = timed("flush", runner.flush_published)  # type: ignore[attr-defined]  # imported there
    runner.in_work_horse = True  # as jobs.worker sets it in a work horse
    runner.run_job(job_id)
    marks["child"] = time.perf_counter() - forked_at
    return {part: seconds * 1000 for part, seconds in marks.items()}


def one_job() -> dict[str, float]:
    from django.db import connections

    from jobs import services

    job = services.submit("bench-noop", {"total": 0})
    connections.close_all()  # as JobsWorkerMixin.fork_work_horse does
    read_end, write_end = os.pipe()
    forked_at = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.write(write_end, json.dumps(horse(str(job.pk), forked_at)).encode())
        finally:
            os._exit(0)  # as rq's work horse leaves
    os.close(write_end)
    os.waitpid(pid, 0)
    whole = (time.perf_counter() - forked_at) * 1000
    with os.fdopen(read_end, "rb") as pipe:
        marks = json.loads(pipe.read() or b"{}")
    if "child" not in marks:
        raise RuntimeError(f"the work horse for job {job.pk} did not finish; see its output above")
    return {**marks, "whole": whole}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50, help="jobs run in a work horse each (default 50)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")

    with django_with_private_redis():
        from django.db import connection

        from jobs.models import JobLog

        for _ in range(5):  # warm-up: the parent's imports and caches, as in a worker that ran a few jobs
            one_job()
        samples = [one_job() for _ in range(args.jobs)]
        JobLog.objects.filter(job_type="bench-noop").delete()
        width = max(len(label) for _part, label in PARTS) + 2
        print(f"\n{'part (' + connection.vendor + ')':<{width}} {'p50 ms':>7} {'p90 ms':>7}")
        print("-" * (width + 16))
        for part, label in PARTS:
            values = [sample.get(part, 0.0) for sample in samples]
            print(f"{label:<{width}} {percentile(values, 50):7.2f} {percentile(values, 90):7.2f}")
        whole = percentile([sample["whole"] for sample in samples], 50)
        print(f"one job at a time in a work horse: about {1000 / whole:.0f} jobs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
