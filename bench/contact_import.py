"""How long the demo's contact-import job takes for a CSV of 10,000 rows (or --rows N), end to end.

    .venv/bin/python bench/contact_import.py                    # SQLite in a temp dir, a private redis-server
    .venv/bin/python bench/contact_import.py --rows 50000
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/jobs_bench .venv/bin/python bench/contact_import.py

It runs the demo project (project.settings) on a throwaway database, migrates it, writes a CSV of generated contacts
(2 % invalid rows, 1 % duplicates, as in real exports), submits a contact-import job for a fresh user and runs it in
an in-process worker (rq's SimpleWorker, as `jobs_worker --worker-class simple` would). It prints the time from
submit to the job's end, the handler's own time (started_at to finished_at in the job's row), rows per second, and
the job's counts. Run it twice to see the first run's cold start (imports, SQLite file creation) go away.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port, start_redis_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000, help="data rows in the CSV (default 10000)")
    parser.add_argument("--repeat", type=int, default=1, help="import this many files, one after the other")
    args = parser.parse_args()
    if not 1 <= args.rows <= 1_000_000:
        parser.error("--rows must be between 1 and 1000000")

    workdir = Path(tempfile.mkdtemp(prefix="jobs-bench-import-"))
    redis_port = free_port()
    redis = start_redis_server(redis_port, str(workdir))
    try:
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "project.settings",
                "DATABASE_URL": os.environ.get("DATABASE_URL") or f"sqlite:///{workdir / 'bench.sqlite3'}",
                "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "MEDIA_ROOT": str(workdir / "media"),
            }
        )
        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.db import connection

        from jobs import submit
        from jobs.models import JobLog
        from jobs.worker import build_worker
        from project.demo.contacts import sample_rows
        from project.demo.models import Contact

        call_command("migrate", verbosity=0)
        vendor = f"{connection.vendor} {connection.settings_dict['NAME']}"
        print(f"database: {vendor}; redis-server on port {redis_port}; {args.rows} rows per file", flush=True)
        for run in range(1, args.repeat + 1):
            user = get_user_model().objects.create_user(f"bench-{run}-{time.time_ns()}")
            name = f"uploads/{uuid.uuid4()}.csv"
            path = Path(settings.MEDIA_ROOT) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as handle:
                csv.writer(handle).writerows(sample_rows(args.rows, invalid_every=50, duplicate_every=100))

            started = time.perf_counter()
            job = submit("contact-import", {"file": name}, user=user)
            build_worker(worker_class="simple").work(burst=True, with_scheduler=False, logging_level="WARNING")
            elapsed = time.perf_counter() - started
            job = JobLog.objects.get(pk=job.pk)
            if job.status != "succeeded":
                print(f"run {run}: the job ended {job.status}: {job.error_type}: {job.error_message}")
                return 1
            assert job.started_at and job.finished_at
            handler = (job.finished_at - job.started_at).total_seconds()
            saved = Contact.objects.filter(owner=user).count()
            print(
                f"run {run}: {args.rows} rows in {elapsed:.2f} s end to end ({args.rows / elapsed:,.0f} rows/s), "
                f"handler {handler:.2f} s; {saved} contacts saved; result {job.result}; "
                f"{job.failed_items_count} failed rows listed",
                flush=True,
            )
        return 0
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
