"""How fast the jobs admin renders on a big table: the job list (first page, filtered, searched) and the queues page.

Fills a database of its own with --rows JobLog rows of the bench job types: PostgreSQL's jobs_admin_bench (created
if missing), or with --database sqlite a file in the system's temporary directory (BENCH_DATABASE_URL names
another). Then requests each page through Django's test Client, logged in as a superuser, and prints p50/p95 per
page, its query count and SQL time, the SQL time of the queues page's charts alone (finished counts, and the wait
and run time percentiles), and the plan of the job list's main query. The finished counts come from the rollup
(jobs.rollup): measured before it is filled (a fresh install), then the roll-ups that fill it, then every page. A
private redis-server serves the queues page's Redis reads. A second run with as many rows or fewer reuses them.

    python -m bench.admin_pages                        # 200,000 rows, PostgreSQL
    python -m bench.admin_pages --database sqlite --rows 1000000
    python -m bench.admin_pages --rows 50000 --requests 50
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import Report, percentile

# A p95 the pages should stay under; printed against, never an exit status.
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


def seed(rows: int, batch: int = 5000) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from jobs import registry
    from jobs.models import JobLog

    have = JobLog.objects.count()
    if have >= rows:
        harness.log(f"{have:,} JobLog rows already there; not adding any.")
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
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.executemany(
                    "UPDATE jobs_joblog SET created_at = %s WHERE id = %s",
                    [
                        (connection.ops.adapt_datetimefield_value(c), o.id.hex)
                        for o, c in zip(objects, created_at, strict=True)
                    ],
                )
            else:
                cursor.execute(
                    "UPDATE jobs_joblog SET created_at = data.created FROM (SELECT unnest(%s::uuid[]) AS id, "
                    "unnest(%s::timestamptz[]) AS created) AS data WHERE jobs_joblog.id = data.id",
                    [[str(o.id) for o in objects], created_at],
                )
        print(f"\r{rows - todo:,} / {rows:,} rows ({time.monotonic() - started:.0f} s)", end="", flush=True)
    print()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # What autovacuum does on a live table: fresh statistics and a visibility map for index-only scans.
            cursor.execute("VACUUM ANALYZE jobs_joblog")
    # SQLite: no ANALYZE, as on a site (Django never runs it): the planner goes by the indexes alone.


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


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
            return "\n".join(str(row[-1]) for row in cursor.fetchall())
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def measure_charts(requests: int) -> list[list[str]]:
    """The queues page's charts alone, every queue: SQL time, queries and rows sampled, per chart."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from jobs import registry
    from jobs.monitoring import get_finished_per_day, get_finished_series, get_timings

    names = sorted({t.queue for t in registry.all_types()})
    rows = []
    for label, chart in [
        ("finished per minute/hour (1 h, 24 h)", lambda: get_finished_series(names)),
        ("finished per day, 7 days", lambda: get_finished_per_day(names)),
        ("wait/run p50/p95 per type and per day, and the week's counts", lambda: get_timings(names)),
    ]:
        chart()  # warm-up
        sql_ms, wall_ms = [], []
        for _ in range(requests):
            started = time.perf_counter()
            with CaptureQueriesContext(connection) as captured:
                result = chart()
            wall_ms.append((time.perf_counter() - started) * 1000)
            sql_ms.append(sum(float(q["time"]) for q in captured.captured_queries) * 1000)
        sampled = ""
        if isinstance(result, dict) and "per_type" in result:
            sampled = (
                f"{sum(t['sampled'] for t in result['per_type']):,} + {sum(d['sampled'] for d in result['per_day']):,}"
            )
        rows.append(
            [
                label,
                f"{percentile(sql_ms, 50):.1f}",
                f"{percentile(sql_ms, 95):.1f}",
                f"{percentile(wall_ms, 50):.1f}",
                str(len(captured)),
                sampled,
            ]
        )
    return rows


def measure_rollup(requests: int) -> tuple[list[list[str]], list[list[str]]]:
    """The finished-job rollup: the finished-count charts with nothing rolled up yet (a fresh install: all counted
    live from JobLog), the first roll-up (a week's backfill), and a roll-up with nothing new (the scheduler's steady
    state). Leaves the rollup filled for the pages measured next."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from jobs import rollup
    from jobs.models import FinishedJobCount
    from jobs.monitoring import get_finished_per_day, get_finished_series

    names = rollup.queue_names()
    FinishedJobCount.objects.all().delete()
    fresh = []
    for label, chart in [
        ("finished per minute/hour (1 h, 24 h), nothing rolled up", lambda: get_finished_series(names)),
        ("finished per day, 7 days, nothing rolled up", lambda: get_finished_per_day(names)),
    ]:
        sql_ms, wall_ms = [], []
        for _ in range(max(1, requests // 2)):
            started = time.perf_counter()
            with CaptureQueriesContext(connection) as captured:
                chart()
            wall_ms.append((time.perf_counter() - started) * 1000)
            sql_ms.append(sum(float(q["time"]) for q in captured.captured_queries) * 1000)
        fresh.append([label, f"{percentile(sql_ms, 50):.1f}", f"{percentile(wall_ms, 50):.1f}", str(len(captured))])
    runs = []
    caught_up = False
    while not caught_up:  # a week's backfill: a day per run, as the scheduler does it every RECONCILE_EVERY
        started = time.perf_counter()
        report = rollup.roll_up()
        caught_up = report.caught_up
        label = "a run of the first roll-up (backfill)" if runs or not caught_up else "first roll-up"
        runs.append([label, f"{(time.perf_counter() - started) * 1000:.1f}", str(report.chunks_counted)])
        runs[-1] += [f"{report.rows_written:,}", f"{FinishedJobCount.objects.count():,}"]
    started = time.perf_counter()
    report = rollup.roll_up()
    runs.append(["next roll-up: nothing new", f"{(time.perf_counter() - started) * 1000:.1f}"])
    runs[-1] += [str(report.chunks_counted), f"{report.rows_written:,}", f"{FinishedJobCount.objects.count():,}"]
    return fresh, runs


def main_list_query(queries: list[str]) -> str:
    """The SELECT of the rows shown (not the count, not the filters' queries)."""
    return next(q for q in queries if 'FROM "jobs_joblog"' in q and "ORDER BY" in q and "COUNT(" not in q)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="JobLog rows to have in the table (default 200,000)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page (default 20)")
    parser.add_argument(
        "--database", choices=["postgresql", "sqlite"], default="postgresql", help="which database (default postgresql)"
    )
    parser.add_argument("--quiet-explain", action="store_true", help="do not print the EXPLAIN plans")
    harness.add_arguments(parser)
    args = parser.parse_args()
    if not 1 <= args.rows <= 5_000_000 or not 1 <= args.requests <= 1000:
        parser.error("--rows must be 1 to 5,000,000 and --requests 1 to 1,000")

    # Its own database: the other benchmarks empty jobs_bench, and their rows would change what this one measures.
    if args.database == "sqlite":
        default = f"sqlite:///{Path(tempfile.gettempdir()) / 'jobs_admin_bench.sqlite3'}"
        url = os.environ.get("BENCH_DATABASE_URL") or default
    else:
        url = harness.database_url("jobs_admin_bench")
        harness.ensure_postgres_database(url)
    procs = harness.Processes(Path(tempfile.mkdtemp(prefix="jobs-bench-admin-")))
    report = Report("admin_pages")
    try:
        redis = harness.RedisServer(procs)
        harness.setup_django(harness.django_env("bench.settings", url, redis.url))
        from django.contrib.auth import get_user_model
        from django.test import Client

        from jobs.models import JobLog

        seed(args.rows)
        report.facts_line(
            harness.machine_facts(redis=redis, postgres_url=url if args.database == "postgresql" else None)
        )
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
            ("job list, type+status", "/admin/jobs/joblog/?job_type=bench-echo&status__exact=succeeded"),
            ("job list, search error text", "/admin/jobs/joblog/?q=refused"),
            ("job list, search id prefix", f"/admin/jobs/joblog/?q={some_id[:8]}"),
            ("job list, search username", "/admin/jobs/joblog/?q=bench-user-7"),
            ("queues page", "/admin/jobs/queue/"),
            ("queues page JSON (polling)", "/admin/jobs/queue/data/"),
        ]
        report.line(
            f"{JobLog.objects.count():,} JobLog rows on {args.database}; {args.requests} requests per page; "
            "milliseconds"
        )
        report.line()
        fresh, runs = measure_rollup(args.requests)
        report.line("The finished-count charts before any roll-up (a fresh install: counted live from JobLog):")
        report.line()
        report.table(["chart", "SQL p50", "wall p50", "queries"], fresh)
        report.line()
        report.line("The rollup (FinishedJobCount), filled the way the scheduler does it:")
        report.line()
        report.table(["roll-up", "wall", "chunks counted", "rows written", "rollup rows"], runs)
        report.line()
        rows = []
        plans: list[tuple[str, str]] = []
        slow = []
        for label, path in pages:
            timings, count, sql_ms, queries = measure(client, path, args.requests)
            p50, p95 = percentile(timings, 50), percentile(timings, 95)
            rows.append([label, f"{p50:.1f}", f"{p95:.1f}", f"{max(timings):.1f}", str(count), f"{sql_ms:.1f}"])
            if p95 > TARGET_MS:
                slow.append(label)
            if path.startswith("/admin/jobs/joblog/"):
                plans.append((label, main_list_query(queries)))
        report.table(["page", "p50", "p95", "max", "queries", "SQL"], rows)
        report.line()
        report.line(f"p95 under {TARGET_MS:.0f} ms: " + (f"not for {', '.join(slow)}." if slow else "every page."))
        report.line()
        report.line("The queues page's charts alone (every queue):")
        report.line()
        report.table(
            ["chart", "SQL p50", "SQL p95", "wall p50", "queries", "rows sampled (per type + per day)"],
            measure_charts(args.requests),
        )
        if not args.quiet_explain:
            for label, sql in plans:
                report.line(f"\n--- EXPLAIN ANALYZE, {label}:\n\n```\n{sql}\n\n{explain(sql)}\n```")
        report.save(not args.no_save)
        return 0
    finally:
        procs.close()


if __name__ == "__main__":
    sys.exit(main())
