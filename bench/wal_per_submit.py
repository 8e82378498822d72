"""WAL written per submit() on a large jobs table: job ids as now (random, UUID version 4) against time-ordered ones.

After each checkpoint PostgreSQL logs a whole 8 KB page the first time a page changes. A random id sends each new
row to a random page of the primary key index (and of the events' job index), so on a large table nearly every
submission changes a page not yet logged since the checkpoint; time-ordered ids all land on the index's last pages.
This prints, per id kind, the WAL bytes per submit() in the first ``--submits`` after a CHECKPOINT, and the rate.

JobLog keeps random ids: the first eight hex digits of an id are its short id (admin lists and search, the demo's
pages and file names), and a time-ordered id's first digits are the same for every job of the same minute. This
script measures what that choice costs.

    .venv/bin/python bench/wal_per_submit.py                   # 300,000 jobs in the table, 2,000 submits per kind
    .venv/bin/python bench/wal_per_submit.py --rows 1000000

Starts a private redis-server on a free loopback port; fills the bench's PostgreSQL database (BENCH_DATABASE_URL,
created and migrated if missing) with bench jobs through submit_many and empties its job tables at the end.
Each id kind is measured on a table filled with ids of its own kind.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.in_process import django_with_private_redis  # noqa: E402
from bench.peers import percentile  # noqa: E402

random_id = uuid.uuid4  # kept: the run replaces uuid.uuid4 itself, which submit_many calls


def time_ordered_id() -> uuid.UUID:
    """A UUID version 7 (RFC 9562): the Unix time in milliseconds, then 74 random bits."""
    milliseconds = time.time_ns() // 1_000_000 & (1 << 48) - 1
    random_bits = int.from_bytes(os.urandom(10), "big") >> 6
    rand_a, rand_b = random_bits >> 62, random_bits & (1 << 62) - 1
    return uuid.UUID(int=milliseconds << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000, help="jobs in the table before measuring (300,000)")
    parser.add_argument("--submits", type=int, default=2000, help="submit() calls measured per id kind (2,000)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of both id kinds (2)")
    args = parser.parse_args()
    if args.rows < 0 or args.submits < 1 or args.repeat < 1:
        parser.error("--rows >= 0, --submits >= 1, --repeat >= 1")

    with django_with_private_redis():
        from django.db import connection

        from jobs import services
        from jobs.models import JobLog
        from jobs.queues import get_connection

        redis = get_connection()
        cursor = connection.cursor()
        id_field = JobLog._meta.get_field("id")

        def use_ids(make_id: Callable[[], uuid.UUID]) -> None:
            id_field.default = make_id
            id_field.__dict__.pop("_get_default", None)  # Django caches the default's callable
            services.uuid.uuid4 = make_id  # type: ignore[assignment]  # submit_many's ids

        def fill() -> None:
            cursor.execute("TRUNCATE jobs_jobevent, jobs_joblog CASCADE")
            for start in range(0, args.rows, 1000):
                services.submit_many("bench-noop", [{"total": 0}] * min(1000, args.rows - start))
                redis.flushdb()  # only the rows matter here; no worker runs
            cursor.execute("VACUUM ANALYZE jobs_joblog")

        print(f"{args.rows:,} jobs in the table (ids of the kind measured); {args.submits:,} submit() calls per row")
        print(f"{'job ids':<20} {'WAL bytes/submit':>17} {'submits/s':>10} {'p50 ms':>7}")
        for _ in range(args.repeat):
            for label, make_id in (("uuid4 (random)", random_id), ("uuid7 (time first)", time_ordered_id)):
                use_ids(make_id)
                fill()
                cursor.execute("CHECKPOINT")
                cursor.execute("SELECT pg_current_wal_lsn()")
                [before] = cursor.fetchone()
                calls = []
                started = time.perf_counter()
                for _ in range(args.submits):
                    call_started = time.perf_counter()
                    services.submit("bench-noop", {"total": 0})
                    calls.append((time.perf_counter() - call_started) * 1000)
                rate = args.submits / (time.perf_counter() - started)
                cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [before])
                [wal] = cursor.fetchone()
                print(f"{label:<20} {float(wal) / args.submits:17,.0f} {rate:10,.0f} {percentile(calls, 50):7.3f}")
                redis.flushdb()
        cursor.execute("TRUNCATE jobs_jobevent, jobs_joblog CASCADE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
