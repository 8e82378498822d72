"""How long the demo's contact-import job takes for a CSV of 10,000 rows (or --rows N), end to end.

    python -m bench.contact_import                        # SQLite in a temp dir, a private redis-server
    python -m bench.contact_import --rows 50000 --repeat 3
    python -m bench.contact_import --database postgresql  # BENCH_DATABASE_URL, default jobs_bench

It runs the demo project (project.settings) on a throwaway database, migrates it, writes a CSV of generated contacts
(2 % invalid rows, 1 % duplicates, as in real exports), submits a contact-import job for a fresh user and runs it in
the engine in this process (run_in_process, burst). It prints the time from
submit to the job's end, the handler's own time (started_at to finished_at in the job's row), rows per second, and
the job's counts. Run it twice to see the first run's cold start (imports, SQLite file creation) go away.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench import harness
from bench.harness import Report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000, help="data rows in the CSV (default 10000)")
    parser.add_argument("--repeat", type=int, default=1, help="import this many files, one after the other")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    harness.add_arguments(parser)
    args = parser.parse_args()
    if not 1 <= args.rows <= 1_000_000:
        parser.error("--rows must be between 1 and 1000000")

    workdir = Path(tempfile.mkdtemp(prefix="jobs-bench-import-"))
    procs = harness.Processes(workdir)
    report = Report("contact_import")
    try:
        redis = harness.RedisServer(procs)
        database = harness.database_for(args.database, workdir)
        harness.setup_django(
            harness.django_env("project.settings", database, redis.url, MEDIA_ROOT=str(workdir / "media"))
        )
        from django.conf import settings
        from django.contrib.auth import get_user_model

        from jobs import registry, submit
        from jobs.models import JobLog
        from jobs.workers.supervisor import WorkerOptions, run_in_process
        from project.demo.contacts import sample_rows
        from project.demo.models import Contact, DemoFile

        report.facts_line(harness.machine_facts(redis=redis, postgres_url=database if "postgres" in database else None))
        queue = registry.get("contact-import").queue
        report.line(f"{args.database}, {args.rows:,} rows per file, the engine in this process (run_in_process)")
        for run in range(1, args.repeat + 1):
            user = get_user_model().objects.create_user(f"bench-{run}-{time.time_ns()}")
            name = f"uploads/{uuid.uuid4()}.csv"
            path = Path(settings.MEDIA_ROOT) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as handle:
                csv.writer(handle).writerows(sample_rows(args.rows, invalid_every=50, duplicate_every=100))
            DemoFile.objects.create(path=name, owner=user)  # as the demo's upload form records it

            started = time.perf_counter()
            job = submit("contact-import", {"file": name}, user=user)
            run_in_process(WorkerOptions(queues=[queue], burst=True, with_scheduler=False))
            elapsed = time.perf_counter() - started
            job = JobLog.objects.get(pk=job.pk)
            if job.status != "succeeded":
                report.line(f"run {run}: the job ended {job.status}: {job.error_type}: {job.error_message}")
                return 1
            assert job.started_at and job.finished_at
            handler = (job.finished_at - job.started_at).total_seconds()
            saved = Contact.objects.filter(owner=user).count()
            report.line(
                f"- run {run}: {args.rows:,} rows in {elapsed:.2f} s end to end ({args.rows / elapsed:,.0f} rows/s), "
                f"handler {handler:.2f} s; {saved:,} contacts saved; result {job.result}; "
                f"{job.failed_items_count} failed rows listed"
            )
        report.save(not args.no_save)
        return 0
    finally:
        procs.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
