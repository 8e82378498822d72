"""Set-up shared by the benchmarks that run our code inside their own process (latency_parts.py, wal_per_submit.py)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.peers import DEFAULT_DATABASE_URL, ensure_database, free_port


@contextmanager
def django_with_private_redis() -> Iterator[None]:
    """Django set up with bench.settings: the bench's PostgreSQL database (BENCH_DATABASE_URL, created and migrated
    if missing) and a redis-server of its own on a free loopback port, stopped on the way out."""
    port = free_port()
    redis_server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
        ensure_database(database_url)
        os.environ.update(
            DJANGO_SETTINGS_MODULE="bench.settings",
            DATABASE_URL=database_url,
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            BENCH_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        )
        import django

        django.setup()
        from django.core.management import call_command

        from jobs.queues import get_connection

        call_command("migrate", verbosity=0)
        deadline = time.monotonic() + 10
        while True:  # the private server may need a moment to listen
            try:
                get_connection().ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield
    finally:
        redis_server.terminate()
        redis_server.wait(timeout=10)
