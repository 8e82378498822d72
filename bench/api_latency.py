"""Latency of the REST API over loopback HTTP: job submission and status reads under concurrent clients.

    python -m bench.api_latency --clients 8 --requests 100
    python -m bench.api_latency --database postgresql       # BENCH_DATABASE_URL, default jobs_bench

Starts its own stack (a private redis-server, SQLite in a temporary directory or the bench's PostgreSQL database,
migrations, a user with a token, gunicorn serving the API, jobs_worker processes running the bench-echo jobs), then
runs N client threads that each submit a job and read its status, over and over. Prints p50/p95/p99 for both and the
request rate, and stops every process it started.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench import harness
from bench.harness import Report, percentile


@contextmanager
def stack(args: argparse.Namespace, report: Report) -> Iterator[tuple[str, str]]:
    """Yield (address, token) of a running API; everything is torn down afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="jobs-bench-api-"))
    procs = harness.Processes(workdir)
    try:
        redis = harness.RedisServer(procs)
        database = harness.database_for(args.database, workdir)
        env = harness.django_env("bench.settings", database, redis.url)
        harness.setup_django(env)
        from django.contrib.auth import get_user_model
        from django.db import connection
        from rest_framework.authtoken.models import Token

        with connection.cursor() as cursor:
            harness.reset_job_tables(cursor, sqlite=connection.vendor == "sqlite")
        user, _ = get_user_model().objects.get_or_create(username="bench")
        token = Token.objects.get_or_create(user=user)[0].key
        connection.close()
        report.facts_line(
            harness.machine_facts(redis=redis, postgres_url=database if args.database == "postgresql" else None)
        )

        port = harness.free_port()
        if args.server == "gunicorn":
            server = [sys.executable, "-m", "gunicorn", "django.core.wsgi:get_wsgi_application()"]
            server += ["--bind", f"127.0.0.1:{port}", "--worker-class", "gthread"]
            server += ["--workers", str(args.server_processes), "--threads", str(args.server_threads)]
            server += ["--no-control-socket", "--log-level", "warning"]
        else:
            server = harness.django_command("runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}")
        procs.start("server", server, env)
        worker = harness.django_command("jobs_worker", "--queues", "bench-api", "--processes", "1")
        for i in range(args.workers):
            procs.start(f"worker-{i}", [*worker, "--logging-level", "WARNING"], env)

        def server_answers() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/api/health/")
                return conn.getresponse().status in (200, 503)
            finally:
                conn.close()

        try:
            harness.wait_until("the API server", server_answers)
        except RuntimeError:
            print(procs.log_text("server"), file=sys.stderr)
            raise
        yield f"127.0.0.1:{port}", token
    finally:
        procs.close()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Results:
    submit: list[float] = field(default_factory=list)
    status: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    completed: int = 0  # every answered request, warm-up included: the request rate counts them all
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(address: str, token: str, count: int, deadline: float, results: Results, warmup: int) -> None:
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

    def call(method: str, path: str, body: object = None) -> tuple[int, dict[str, object], float]:
        started = time.perf_counter()
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - started
        if response.getheader("Connection", "").lower() == "close":
            conn.close()  # the next request reconnects
        return response.status, json.loads(data) if data else {}, elapsed

    submits: list[float] = []
    reads: list[float] = []
    errors: list[str] = []
    completed = 0
    try:
        for i in range(warmup + count):
            if time.monotonic() > deadline:
                errors.append("stopped at the time limit")
                break
            code, job, took = call("POST", "/api/jobs/", {"type": "bench-echo", "payload": {"i": i}})
            completed += 1
            if code != 202:
                errors.append(f"POST answered {code}: {job}")
                continue
            code, _, took_read = call("GET", f"/api/jobs/{job['id']}/")
            completed += 1
            if code != 200:
                errors.append(f"GET answered {code}")
                continue
            if i >= warmup:
                submits.append(took)
                reads.append(took_read)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
    with results.lock:
        results.submit += submits
        results.status += reads
        results.errors += errors
        results.completed += completed


def summary(name: str, values: list[float]) -> list[str]:
    if not values:
        return [name, "0", "", "", "", ""]
    ms = [v * 1000 for v in values]
    return [name, str(len(ms))] + [f"{percentile(ms, pct):.2f}" for pct in (50, 95, 99)] + [f"{max(ms):.2f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads (default 8)")
    parser.add_argument("--requests", type=int, default=100, help="submissions per client, each followed by a read")
    parser.add_argument("--warmup", type=int, default=3, help="untimed submissions per client first (default 3)")
    parser.add_argument("--workers", type=int, default=1, help="jobs_worker processes running the jobs (default 1)")
    parser.add_argument("--server", choices=["gunicorn", "runserver"], default="gunicorn")
    parser.add_argument("--server-processes", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument("--server-threads", type=int, default=8, help="threads per gunicorn process (default 8)")
    parser.add_argument("--time-limit", type=float, default=300, help="stop the clients after this many seconds")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    harness.add_arguments(parser)
    args = parser.parse_args()
    if not (1 <= args.clients <= 256 and 1 <= args.requests <= 100_000):
        parser.error("--clients is 1..256 and --requests 1..100000")
    if args.server == "gunicorn" and importlib.util.find_spec("gunicorn") is None:
        parser.error("gunicorn is not installed: pip install -e '.[bench]' (or use --server runserver)")

    report = Report("api_latency")
    report.line(
        f"{args.server}, {args.workers} jobs_worker --processes 1 on {args.database}; {args.clients} clients x "
        f"{args.requests} submissions (+{args.warmup} warm-up), each followed by a read"
    )
    with stack(args, report) as (address, token):
        results = Results()
        deadline = time.monotonic() + args.time_limit
        threads = [
            threading.Thread(target=client, args=(address, token, args.requests, deadline, results, args.warmup))
            for _ in range(args.clients)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    report.line()
    report.table(
        ["request", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        [summary("submit", results.submit), summary("status", results.status)],
    )
    report.line()
    report.line(
        f"{results.completed} requests (warm-up included) in {wall:.2f} s: {results.completed / wall:.0f} req/s"
    )
    if results.errors:
        report.line(f"{len(results.errors)} errors, first: {results.errors[0]}")
    if args.server == "runserver":
        report.line("runserver answers in two TCP writes: Nagle and delayed ACKs add to every request.")
    report.save(not args.no_save)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
