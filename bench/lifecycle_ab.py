"""A/B of the PostgreSQL fast path of jobs.lifecycle against the ORM path, on PostgreSQL.

    python -m bench.lifecycle_ab                       # 300 batches per size, 5,000 jobs end to end, 3 rounds
    python -m bench.lifecycle_ab --samples 50 --jobs 500 --repeat 1

1. Per batch of 1, 8 and 16 jobs: the start (jobs.lifecycle.postgresql.start, one data-modifying statement,
   against jobs.lifecycle.batches._start_orm) and the success (postgresql.succeed against _succeed_orm), each
   batch on fresh rows, the two variants interleaved. Prints microseconds per job (p50 and p90), the statements
   Django sent per batch, and the server round trips per batch (ReadyForQuery messages in libpq's trace: BEGIN
   and COMMIT included).
2. End to end: the in-process engine (run_in_process, --concurrency 8, burst) draining --jobs no-op jobs with the
   fast path, then with the ORM path swapped in for it (in this process only), --repeat rounds in alternating
   order; jobs/s each and their ratio. Every job's row must say succeeded.

Uses the bench's PostgreSQL database (BENCH_DATABASE_URL, default jobs_bench; created and migrated if missing) and
a private redis-server; empties the job tables before and after.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import Report, fmt, median, percentile, ratio

SIZES = (1, 8, 16)


def queued_rows(count: int) -> list[uuid.UUID]:
    from jobs.models import JobLog, JobStatus

    rows = [
        JobLog(job_type="bench-noop", queue="bench", status=JobStatus.QUEUED, payload={"total": 0}, max_attempts=3)
        for _ in range(count)
    ]
    JobLog.objects.bulk_create(rows)
    return [row.pk for row in rows]


@contextmanager
def counted() -> Iterator[dict[str, int]]:
    """Statements Django sends, and server round trips (ReadyForQuery messages in libpq's trace), in the block."""
    from django.db import connection

    counts = {"statements": 0, "round trips": 0}

    def count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        counts["statements"] += 1
        return execute(sql, params, many, context)

    import psycopg

    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    with tempfile.TemporaryFile() as trace, connection.execute_wrapper(count):
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield counts
        finally:
            pgconn.untrace()
            trace.seek(0)
            counts["round trips"] = sum(1 for line in trace.read().splitlines() if b"ReadyForQuery" in line)


def empty_tables() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        harness.reset_job_tables(cursor)


def variants() -> dict[str, tuple[Callable[..., Any], Callable[..., Any]]]:
    from jobs.lifecycle import batches
    from jobs.lifecycle import postgresql as lifecycle_postgresql

    return {
        "fast path": (lifecycle_postgresql.start, lifecycle_postgresql.succeed),
        "ORM": (batches._start_orm, batches._succeed_orm),
    }


def one_batch(start: Callable[..., Any], succeed: Callable[..., Any], size: int) -> tuple[float, float]:
    """Seconds to start ``size`` fresh queued jobs, and to record them succeeded."""
    from django.utils import timezone

    ids = queued_rows(size)
    began = time.perf_counter()
    jobs = start(ids, timezone.now(), "bench-lifecycle-ab", job_types=None)
    started = time.perf_counter()
    if len(jobs) != size:
        raise RuntimeError(f"started {len(jobs)} of {size} jobs")
    for job in jobs:
        job.progress_percent, job.result = 100, {"ok": True}
    mid = time.perf_counter()
    written = succeed(jobs, timezone.now())
    ended = time.perf_counter()
    if len(written) != size:
        raise RuntimeError(f"recorded {len(written)} of {size} successes")
    return started - began, ended - mid


def batches(report: Report, samples: int) -> None:
    from django.utils import timezone

    found = variants()
    rows = []
    for size in SIZES:
        times: dict[tuple[str, str], list[float]] = {}
        for start, succeed in found.values():
            one_batch(start, succeed, size)  # warm-up: statements and converters cached
        for i in range(samples):
            order = list(found) if i % 2 == 0 else list(reversed(found))
            for name in order:
                took_start, took_succeed = one_batch(*found[name], size)
                times.setdefault((name, "start"), []).append(took_start * 1e6 / size)
                times.setdefault((name, "succeed"), []).append(took_succeed * 1e6 / size)
        for step in ("start", "succeed"):
            cells: dict[str, dict[str, Any]] = {}
            for name, (start, succeed) in found.items():
                ids = queued_rows(size)
                if step == "start":
                    with counted() as counts:
                        start(ids, timezone.now(), "bench-lifecycle-ab", job_types=None)
                else:
                    jobs = start(ids, timezone.now(), "bench-lifecycle-ab", job_types=None)
                    with counted() as counts:
                        succeed(jobs, timezone.now())
                values = times[(name, step)]
                cells[name] = {"p50": percentile(values, 50), "p90": percentile(values, 90), **counts}
            fast, orm = cells["fast path"], cells["ORM"]
            rows.append(
                [
                    f"{step}, batch of {size}",
                    f"{fast['p50']:,.0f} / {fast['p90']:,.0f}",
                    f"{orm['p50']:,.0f} / {orm['p90']:,.0f}",
                    fmt(ratio(orm["p50"], fast["p50"]), ".2f"),
                    f"{fast['statements']} / {fast['round trips']}",
                    f"{orm['statements']} / {orm['round trips']}",
                ]
            )
        empty_tables()
    report.line(f"Per batch, {samples} batches per size and variant, interleaved (µs per job, p50 / p90):")
    report.line()
    header = ["step", "fast path µs/job", "ORM µs/job", "ORM/fast (p50)", "fast: stmts / trips", "ORM: stmts / trips"]
    report.table(header, rows)


def end_to_end(report: Report, redis: Any, jobs: int, rounds: int) -> None:
    from jobs import services
    from jobs.lifecycle import batches
    from jobs.lifecycle import postgresql as lifecycle_postgresql
    from jobs.models import JobLog
    from jobs.workers.supervisor import WorkerOptions, run_in_process

    fast = (lifecycle_postgresql.start, lifecycle_postgresql.succeed)
    orm = (batches._start_orm, batches._succeed_orm)
    rates: dict[str, list[float]] = {"fast path": [], "ORM": []}
    for i in range(rounds):
        for name in ("fast path", "ORM") if i % 2 == 0 else ("ORM", "fast path"):
            empty_tables()
            redis.flushall()
            services.submit_many("bench-noop", [{"total": jobs} for _ in range(jobs)])
            # lifecycle.start and succeed call these through the module: the swap reaches the engine.
            lifecycle_postgresql.start, lifecycle_postgresql.succeed = fast if name == "fast path" else orm  # type: ignore[assignment]
            try:
                began = time.perf_counter()
                taken = run_in_process(WorkerOptions(queues=["bench"], concurrency=8, burst=True))
                elapsed = time.perf_counter() - began
            finally:
                lifecycle_postgresql.start, lifecycle_postgresql.succeed = fast  # type: ignore[assignment]
            succeeded = JobLog.objects.filter(status="succeeded").count()
            if taken != jobs or succeeded != jobs:
                raise RuntimeError(f"{name}: took {taken} jobs, {succeeded} of {jobs} rows succeeded")
            rates[name].append(jobs / elapsed)
            report.line(f"- round {i + 1}, {name}: {jobs / elapsed:,.0f} jobs/s")
    a, b = median(rates["fast path"]), median(rates["ORM"])
    report.line()
    header = [f"end to end, run_in_process --concurrency 8, {jobs:,} no-op jobs", "jobs/s (median)"]
    report.table(header, [["fast path", fmt(a)], ["ORM", fmt(b)], ["fast path / ORM", fmt(ratio(a, b), ".2f")]])
    empty_tables()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300, help="batches per size and variant (default 300)")
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs per end-to-end run (default 5,000)")
    parser.add_argument("--repeat", type=int, default=3, help="end-to-end rounds of each variant (default 3)")
    harness.add_arguments(parser)
    args = parser.parse_args()
    if args.samples < 1 or args.jobs < 1 or args.repeat < 1:
        parser.error("--samples, --jobs and --repeat must be at least 1")
    procs = harness.Processes(Path(tempfile.mkdtemp(prefix="jobs-lifecycle-ab-")))
    report = Report("lifecycle_ab")
    try:
        redis, url = harness.postgres_bench(procs)
        empty_tables()
        report.facts_line(harness.machine_facts(redis=redis, postgres_url=url))
        batches(report, args.samples)
        report.line()
        end_to_end(report, redis.client(), args.jobs, args.repeat)
        report.save(not args.no_save)
    finally:
        procs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
