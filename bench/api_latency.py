"""Latency of the REST API over loopback HTTP: job submission and status reads under concurrent clients.

Starts its own stack (a private redis-server on a free port, SQLite in a temporary directory or DATABASE_URL,
migrations, a user with a token, gunicorn serving the API, jobs_worker processes), then runs N client threads that
each submit a job and read its status, over and over. Prints p50/p95/p99 for both and the request rate, and stops
every process it started. See bench/README.md.

    .venv/bin/python bench/api_latency.py --clients 8 --requests 200
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


class Stack:
    """The processes this benchmark starts, stopped (process group and all) however the run ends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def start_redis(procs: Stack, workdir: Path) -> int:
    """A private redis-server without persistence on a free port, answering; returns the port."""
    port = free_port()
    procs.start(
        "redis",
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        + ["--save", "", "--appendonly", "no", "--dir", str(workdir)],
        dict(os.environ),
    )

    def redis_answers() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    wait_until("redis-server", redis_answers)
    return port


@contextmanager
def stack(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """Yield (base_url, token) of a running API; everything is torn down afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="jobs-bench-"))
    procs = Stack(workdir)
    try:
        redis_port = start_redis(procs, workdir)

        # The test settings (the test job types included), with the submission throttle off and persistent
        # database connections, as a production deployment would have them.
        (workdir / "bench_settings.py").write_text(
            textwrap.dedent(
                """
                from tests.settings import *  # noqa: F403

                JOBS = {**JOBS, "SUBMIT_RATE": None}  # noqa: F405
                DATABASES["default"]["CONN_MAX_AGE"] = 60  # noqa: F405
                """
            )
        )
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench_settings",
            "PYTHONPATH": os.pathsep.join([str(workdir), str(ROOT)]),
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "DATABASE_URL": os.environ.get("DATABASE_URL") or f"sqlite:///{workdir / 'bench.sqlite3'}",
        }
        django = [sys.executable, "-m", "django"]
        subprocess.run([*django, "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
        token = subprocess.run(
            [
                *django,
                "shell",
                "-c",
                "from django.contrib.auth import get_user_model; from rest_framework.authtoken.models import Token; "
                "u, _ = get_user_model().objects.get_or_create(username='bench'); "
                "print(Token.objects.get_or_create(user=u)[0].key)",
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]  # the last word: Django's shell may print a banner first

        port = free_port()
        if args.server == "gunicorn":
            server = [
                sys.executable,
                "-m",
                "gunicorn",
                "django.core.wsgi:get_wsgi_application()",
                "--bind",
                f"127.0.0.1:{port}",
                "--worker-class",
                "gthread",
                "--workers",
                str(args.server_processes),
                "--threads",
                str(args.server_threads),
                "--no-control-socket",
                "--log-level",
                "warning",
            ]
        else:
            server = [*django, "runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}"]
        procs.start("server", server, env)
        worker = [*django, "jobs_worker", "--processes", "1", "--logging-level", "WARNING"]
        for i in range(args.workers):
            procs.start(f"worker-{i}", worker, env)

        def server_answers() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/api/health/")
                return conn.getresponse().status in (200, 503)
            finally:
                conn.close()

        try:
            wait_until("the API server", server_answers)
        except RuntimeError:
            print(procs.log("server"), file=sys.stderr)
            raise
        yield f"127.0.0.1:{port}", token
    finally:
        procs.stop()
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
            code, job, took = call("POST", "/api/jobs/", {"type": "echo", "payload": {"i": i}})
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


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))]


def report(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<8} no samples"
    ms = [v * 1000 for v in values]
    return (
        f"{name:<8} n={len(ms):<6} p50={percentile(ms, 50):7.2f} ms  p95={percentile(ms, 95):7.2f} ms  "
        f"p99={percentile(ms, 99):7.2f} ms  max={max(ms):7.2f} ms"
    )


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
    args = parser.parse_args()
    if not (1 <= args.clients <= 256 and 1 <= args.requests <= 100_000):
        parser.error("--clients is 1..256 and --requests 1..100000")
    if args.server == "gunicorn" and importlib.util.find_spec("gunicorn") is None:
        parser.error("gunicorn is not installed: pip install -e '.[bench]' (or use --server runserver)")

    database = "PostgreSQL (DATABASE_URL)" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "SQLite"
    print(
        f"Starting redis-server, {args.server}, {args.workers} jobs_worker(s) on {database}; "
        f"{args.clients} clients x {args.requests} submissions (+{args.warmup} warm-up), each followed by a read"
    )
    with stack(args) as (address, token):
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
    print(report("submit", results.submit))
    print(report("status", results.status))
    print(f"{results.completed} requests (warm-up included) in {wall:.2f} s: {results.completed / wall:.0f} req/s")
    if results.errors:
        print(f"{len(results.errors)} errors, first: {results.errors[0]}")
    if args.server == "runserver":
        print("note: runserver answers in two TCP writes; Nagle and delayed ACKs add about 40 ms to every request")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
