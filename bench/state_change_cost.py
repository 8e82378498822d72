"""What a job's INSERT and its start cost PostgreSQL, and what the job table's indexes add to them.

A job's start (and its finish) is an UPDATE of its JobLog row that changes ``status``. Four of the table's indexes
hold ``status`` (the dashboard's and the API's lists and counts), so PostgreSQL cannot make that UPDATE a HOT
update (one that adds no index entries): it writes the new row version into every index of the table. This script
measures what that costs, on copies of the job and event tables in the bench database (``CREATE TABLE ... (LIKE
... INCLUDING ALL)``, the events' foreign key pointing at the copy), with the app's own statements:

- as shipped: every index of ``jobs_joblog``;
- without the four indexes that hold ``status``: the start can be a HOT update;
- the primary key only.

For each, it times ``submit()``'s INSERT (the row and its "submitted" event, one statement, a durable commit) and
the runner's start (``start_attempts``: the UPDATE and its "started" event, committed without waiting for the WAL
flush), each after a 10-50 ms idle pause as in peers.py's latency phase (``--tight``: none), the variants
interleaved. It then prints the share of the starts PostgreSQL made HOT.

    .venv/bin/python bench/state_change_cost.py              # PostgreSQL (BENCH_DATABASE_URL), 300 samples (~1 min)
    .venv/bin/python bench/state_change_cost.py --tight

Uses the bench's PostgreSQL database (created and migrated if missing) and a private redis-server it does not use;
drops its table copies at the end.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.in_process import django_with_private_redis  # noqa: E402
from bench.peers import percentile  # noqa: E402

VARIANTS = (
    ("shipped", "as shipped (every index)"),
    ("nostatus", "without the 4 indexes holding status"),
    ("pkey", "primary key only"),
)
FILL_ROWS = 2000


def create_copies(variant: str) -> tuple[str, str]:
    """The job and event table copies for ``variant``, with its indexes; returns their names."""
    from django.db import connection

    log, event = f"bench_sc_{variant}_joblog", f"bench_sc_{variant}_jobevent"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {event}, {log}")
        cursor.execute(f"CREATE TABLE {log} (LIKE jobs_joblog INCLUDING ALL)")
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [log])
        for name, definition in cursor.fetchall():
            primary, columns = name.endswith("_pkey"), definition.split(" USING ", 1)[1]  # its columns, predicate
            if (variant == "nostatus" and "status" in columns) or (variant == "pkey" and not primary):
                cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute(f"CREATE TABLE {event} (LIKE jobs_jobevent INCLUDING ALL)")
        cursor.execute(
            f"ALTER TABLE {event} ADD FOREIGN KEY (job_id) REFERENCES {log} (id) DEFERRABLE INITIALLY DEFERRED"
        )
    return log, event


@contextmanager
def tables(log: str, event: str) -> Iterator[None]:
    """The app's models pointed at these tables, so its own statements run on them."""
    from jobs import services
    from jobs.models import JobEvent, JobLog

    saved = JobLog._meta.db_table, JobEvent._meta.db_table, services._insert_statements
    JobLog._meta.db_table, JobEvent._meta.db_table = log, event
    # submit() caches its INSERT's text per model, table name included: one cache per copy, built once.
    services._insert_statements = _insert_statements.setdefault(log, {})
    try:
        yield
    finally:
        JobLog._meta.db_table, JobEvent._meta.db_table, services._insert_statements = saved


_insert_statements: dict[str, dict[type, tuple[str, list[object]]]] = {}


def submit_row() -> uuid.UUID:
    """submit()'s INSERT of a new row and its event, without the push."""
    from django.utils import timezone

    from jobs import registry, services

    job = services._new_job(
        registry.get("bench-noop"), {"total": 0}, owner=None, priority="normal", run_at=None, now=timezone.now()
    )
    services._insert_with_event(job)
    return job.pk


def start_row(job_id: uuid.UUID) -> None:
    from django.utils import timezone

    from jobs import runner

    if not runner.start_attempts([job_id], timezone.now(), "bench"):
        raise RuntimeError(f"job {job_id} was not started")


def hot_share(log: str) -> tuple[int, int]:
    """(updates, HOT updates) of ``log`` so far, once this backend's statistics are flushed."""
    from django.db import connection

    with connection.cursor() as cursor:
        time.sleep(1.1)  # a backend reports its statistics at most once a second, when it goes idle
        cursor.execute("SELECT 1")
        time.sleep(0.1)
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = %s", [log])
        updates, hot = cursor.fetchone()
    return int(updates), int(hot)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300, help="INSERTs and starts timed per variant (300)")
    parser.add_argument("--tight", action="store_true", help="no idle pause between statements")
    args = parser.parse_args()
    if args.samples < 10:
        parser.error("--samples must be at least 10")

    with django_with_private_redis():
        from django.db import connection

        copies = {variant: create_copies(variant) for variant, _label in VARIANTS}
        try:
            for log, event in copies.values():
                with tables(log, event):
                    for _ in range(FILL_ROWS):  # a table with some history, its pages and indexes warm
                        start_row(submit_row())
            inserts: dict[str, list[float]] = {variant: [] for variant in copies}
            starts: dict[str, list[float]] = {variant: [] for variant in copies}
            for _ in range(args.samples):
                for variant in random.sample(list(copies), len(copies)):
                    with tables(*copies[variant]):
                        if not args.tight:
                            time.sleep(random.uniform(0.01, 0.05))
                        began = time.perf_counter()
                        job_id = submit_row()
                        inserts[variant].append((time.perf_counter() - began) * 1000)
                        if not args.tight:
                            time.sleep(random.uniform(0.01, 0.05))
                        began = time.perf_counter()
                        start_row(job_id)
                        starts[variant].append((time.perf_counter() - began) * 1000)
            pause = "no pause" if args.tight else "each after a 10-50 ms idle pause"
            print(f"\nPostgreSQL {connection.pg_version // 10000}, {args.samples} samples per variant, {pause}")
            print(f"{'job table':<38} {'INSERT p50':>10} {'p90':>7} {'start p50':>10} {'p90':>7} {'HOT starts':>11}")
            print("-" * 88)
            for variant, label in VARIANTS:
                updates, hot = hot_share(copies[variant][0])
                print(
                    f"{label:<38} {percentile(inserts[variant], 50):10.3f} {percentile(inserts[variant], 90):7.3f}"
                    f" {percentile(starts[variant], 50):10.3f} {percentile(starts[variant], 90):7.3f}"
                    f" {100 * hot / max(updates, 1):10.0f}%"
                )
            print("(ms; the INSERT commits durably, the start without waiting for the WAL flush, as the app's do)")
        finally:
            with connection.cursor() as cursor:
                for log, event in copies.values():
                    cursor.execute(f"DROP TABLE IF EXISTS {event}, {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
