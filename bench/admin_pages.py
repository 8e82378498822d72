"""How fast the jobs admin renders on a big table: the job list (first page, filtered, searched) and the queues page.

Fills a throwaway PostgreSQL database (created if missing) with --rows JobLog rows, then requests each page through
Django's test Client, logged in as a superuser, and prints p50/p95 per page, its query count, and the EXPLAIN
(ANALYZE) of the job list's main query. A private redis-server serves the queues page's Redis reads. See
bench/README.md.

    .venv/bin/python bench/admin_pages.py                                   # 200,000 rows in jobs_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/other .venv/bin/python bench/admin_pages.py --rows 50000
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
# Its own database: other benchmarks use jobs_bench, and their rows would change what this one measures.
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/jobs_admin_bench"
TARGET_MS = 300.0

STATUSES = [  # (status, share): mostly history, as on a site that has run for a while
    ("succeeded", 0.86),
    ("failed", 0.05),
    ("canceled", 0.03),
    ("queued", 0.025),
    ("scheduled", 0.015),
    ("pending", 0.01),
    ("running", 0.01),
]
ERRORS = [
    ("ConnectionError", "Connection refused by mail.example.com:25"),
    ("TimeoutError", "The upstream API did not answer within 30 s"),
    ("ValueError", "Row 17: 'phone' is not a phone number"),
    ("JobTimeout", "The job ran longer than its timeout of 300 s."),
]


def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if it does not exist (connecting to the server's "postgres" one)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"Created database {name}.")


def seed(rows: int, batch: int = 5000) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from jobs import registry
    from jobs.models import JobLog

    have = JobLog.objects.count()
    if have >= rows:
        print(f"{have:,} JobLog rows already there; not adding any.")
        return
    User = get_user_model()
    owners = [User.objects.get_or_create(username=f"bench-user-{i}")[0] for i in range(50)]
    types = registry.all_types()
    rng = random.Random(42)
    now = timezone.now()
    statuses, weights = zip(*STATUSES, strict=True)
    started = time.monotonic()
    todo = rows - have
    while todo > 0:
        objects = []
        created_at = []
        for _ in range(min(batch, todo)):
            job_type = rng.choice(types)
            status = rng.choices(statuses, weights)[0]
            # A month of history, denser in recent days (so the day and hour charts have something to draw).
            created = now - timedelta(seconds=min(30 * 86400, rng.expovariate(1 / (6 * 86400))))
            created_at.append(created)
            fields: dict[str, Any] = {}
            if status in ("succeeded", "failed", "canceled", "running"):
                fields["started_at"] = created + timedelta(seconds=rng.uniform(0.01, 5))
                fields["attempts"] = 1 if status != "failed" else 3
            if status in ("succeeded", "failed", "canceled"):
                fields["finished_at"] = fields["started_at"] + timedelta(seconds=rng.expovariate(1 / 4))
                fields["progress_percent"] = 100 if status == "succeeded" else rng.randrange(0, 100)
            if status == "failed":
                fields["error_type"], fields["error_message"] = rng.choice(ERRORS)
                fields["traceback"] = "Traceback (most recent call last):\n  ...\n" + fields["error_message"]
            if status == "succeeded":
                fields["result"] = {"rows": rng.randrange(1, 10_000)}
            objects.append(
                JobLog(
                    id=uuid.uuid4(),
                    job_type=job_type.name,
                    queue=job_type.queue,
                    priority=rng.choices(["critical", "high", "normal", "low"], [1, 5, 85, 9])[0],
                    status=status,
                    payload={"n": rng.randrange(1_000_000), "note": "bench"},
                    owner=rng.choice(owners),
                    max_attempts=job_type.max_attempts,
                    **fields,
                )
            )
        JobLog.objects.bulk_create(objects)
        todo -= len(objects)
        # bulk_create stamps created_at (auto_now_add) with now: spread it over the month, by id, in SQL.
        ids = [str(o.id) for o in objects]
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE jobs_joblog SET created_at = data.created FROM (SELECT unnest(%s::uuid[]) AS id, "
                "unnest(%s::timestamptz[]) AS created) AS data WHERE jobs_joblog.id = data.id",
                [ids, created_at],
            )
        print(f"\r{rows - todo:,} / {rows:,} rows ({time.monotonic() - started:.0f} s)", end="", flush=True)
    print()
    with connection.cursor() as cursor:
        # What autovacuum does on a live table: fresh statistics and a visibility map for index-only scans.
        cursor.execute("VACUUM ANALYZE jobs_joblog")


def measure(client: Any, path: str, requests: int) -> tuple[list[float], int, float, list[str]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):  # warm-up: template loading, connection setup
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as captured:
        client.get(path)
    sql_ms = sum(float(q["time"]) for q in captured.captured_queries) * 1000
    return timings, len(captured), sql_ms, [q["sql"] for q in captured.captured_queries]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def main_list_query(queries: list[str]) -> str:
    """The SELECT of the rows shown (not the count, not the filters' queries)."""
    return next(q for q in queries if 'FROM "jobs_joblog"' in q and "ORDER BY" in q and "COUNT(" not in q)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="JobLog rows to have in the table (default 200,000)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page (default 20)")
    parser.add_argument("--quiet-explain", action="store_true", help="do not print the EXPLAIN plans")
    args = parser.parse_args()
    if not 1 <= args.rows <= 5_000_000 or not 1 <= args.requests <= 1000:
        parser.error("--rows must be 1 to 5,000,000 and --requests 1 to 1,000")

    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    if not url.startswith(("postgres://", "postgresql://")):
        parser.error("this benchmark measures PostgreSQL: set DATABASE_URL to a throwaway PostgreSQL database")
    ensure_database(url)

    sys.path.insert(0, str(ROOT))
    from tests.conftest import free_port, start_redis_server

    workdir = tempfile.mkdtemp(prefix="jobs-bench-admin-")
    redis_port = free_port()
    redis = start_redis_server(redis_port, workdir)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings", DATABASE_URL=url, REDIS_URL=f"redis://127.0.0.1:{redis_port}/0"
    )
    try:
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client

        call_command("migrate", verbosity=0)
        seed(args.rows)
        from jobs.models import JobLog

        User = get_user_model()
        admin, _ = User.objects.get_or_create(username="bench-admin", defaults={"is_staff": True})
        admin.is_staff = admin.is_superuser = True
        admin.save()
        client = Client()
        client.force_login(admin)
        some_id = str(JobLog.objects.filter(status="failed").values_list("pk", flat=True).first())
        pages = [
            ("job list, first page", "/admin/jobs/joblog/"),
            ("job list, status=failed", "/admin/jobs/joblog/?status__exact=failed"),
            ("job list, type+status", "/admin/jobs/joblog/?job_type=echo&status__exact=succeeded"),
            ("job list, search error text", "/admin/jobs/joblog/?q=refused"),
            ("job list, search id prefix", f"/admin/jobs/joblog/?q={some_id[:8]}"),
            ("job list, search username", "/admin/jobs/joblog/?q=bench-user-7"),
            ("queues page", "/admin/jobs/queue/"),
            ("queues page JSON (polling)", "/admin/jobs/queue/data/"),
        ]
        total = JobLog.objects.count()
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"\n{total:,} JobLog rows on PostgreSQL {connection.pg_version}; {args.requests} requests per page; "
            f"{os.cpu_count()} CPUs, load average {load}\n"
        )
        print(f"{'page':<30} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'queries':>8} {'SQL ms':>8}")
        plans: list[tuple[str, str]] = []
        slow = []
        for label, path in pages:
            timings, count, sql_ms, queries = measure(client, path, args.requests)
            p50, p95 = percentile(timings, 0.5), percentile(timings, 0.95)
            print(f"{label:<30} {p50:8.1f} {p95:8.1f} {max(timings):8.1f} {count:8d} {sql_ms:8.1f}")
            if p95 > TARGET_MS:
                slow.append(label)
            if path.startswith("/admin/jobs/joblog/"):
                plans.append((label, main_list_query(queries)))
        if not args.quiet_explain:
            for label, sql in plans:
                print(f"\n--- EXPLAIN ANALYZE, {label}:\n{sql}\n\n{explain(sql)}")
        print(f"\nTarget: p95 under {TARGET_MS:.0f} ms. " + (f"Over it: {', '.join(slow)}." if slow else "All met."))
        return 1 if slow else 0
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
