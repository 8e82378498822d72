"""Our jobs app side by side with django-rq plus a JobLog, plain rq, Celery and Dramatiq: one run, one Redis, one
PostgreSQL, one table.

    .venv/bin/python bench/peers.py             # full run: --repeat 3, 10,000 no-op jobs per run (~1 h)
    .venv/bin/python bench/peers.py --quick     # smoke run with small counts, one repetition (~2 min)

Starts a private redis-server on a free loopback port, uses (and creates, and migrates) the PostgreSQL database in
BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/jobs_peers), installs rq, Celery and Dramatiq into
virtual environments of their own under bench/.venvs/ on first use (the django-rq baseline, bench/naive/, runs
with the project's own django-rq) (with --database sqlite, ours uses a SQLite file in WAL mode instead,
configured as the demo configures it), then measures enqueue rates, processing rates (no-op and 50 ms sleep
jobs; also one forking worker, a process per job, against rq's), end-to-end latency, worker memory, and Redis
commands, SQL statements and CPU per job. Every measurement is repeated --repeat times and the table shows medians
with the ratio ours/peer. Every process it starts is stopped at the end, also on Ctrl-C. See bench/README.md for
what each number means.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / "bench" / ".venvs"
PEER_REQUIREMENTS = {
    "rq": ["rq>=3,<4"],
    "celery": ["celery[redis]>=5.4"],
    "dramatiq": ["dramatiq[redis]>=1.17"],
}
SYSTEMS = ("ours", "django-rq", "rq", "celery", "dramatiq")
PEERS = SYSTEMS[1:]
# Django projects on the bench database, run with this interpreter: ours, and the baseline a team would write
# without it (bench/naive/: django-rq, a TaskLog row written at submit, start and finish).
DJANGO_SYSTEMS = ("ours", "django-rq")
SETTINGS = {"ours": "bench.settings", "django-rq": "bench.naive.settings"}
PHASES = ("enqueue", "noop", "pool", "fork", "io", "latency")
# A database of its own: the run empties its job tables over and over.
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/jobs_peers"

# Marker keys (bench/peer_tasks/marker.py); the orchestrator reads them and subtracts their commands.
DONE, STARTS, FINISHED = "bench:done", "bench:starts", "bench:finished"

POLL_SECONDS = 0.2
RUN_ENV = "BENCH_PEERS_RUN"  # marks every process this run starts (Procs)
STOP_GRACE_SECONDS = 30.0


def log(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))]


# --------------------------------------------------------------------------------------------------------------
# Processes


class Procs:
    """Every process this benchmark starts, each in its own session, stopped (with its children) however it ends.

    Each gets BENCH_PEERS_RUN=<this run's id> in its environment, which its children inherit: the only test of
    whether a process is ours. Process and group ids are reused by the system, so a group id alone could name
    someone else's process (a PostgreSQL backend, say) once our group is gone.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.live: list[subprocess.Popen[bytes]] = []
        self.run_id = uuid.uuid4().hex

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        return {**env, RUN_ENV: self.run_id}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        logfile = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed right after the fork
        try:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.environment(env),
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            logfile.close()
        self.live.append(proc)
        return proc

    def run(self, name: str, argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
        """Run a driver to completion and return the JSON it printed last."""
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.environment(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.live.append(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop([proc], grace=2)
            raise RuntimeError(f"{name} did not finish within {timeout:.0f} s") from None
        finally:
            if proc.poll() is not None and proc in self.live:
                self.live.remove(proc)
        lines = out.decode(errors="replace").strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{name} failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        if "error" in result:
            raise RuntimeError(f"{name}: {result['error']}\n{err.decode(errors='replace')[-2000:]}")
        return result

    def tail(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def ours(self, group: int | None = None) -> list[Any]:
        """Our live processes (by the environment mark), optionally only those in process group ``group``."""
        import psutil

        found = []
        for proc in psutil.process_iter():
            try:
                if proc.pid == os.getpid() or proc.environ().get(RUN_ENV) != self.run_id:
                    continue
                if group is None or os.getpgid(proc.pid) == group:
                    found.append(proc)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    def stop(self, procs: Iterable[subprocess.Popen[bytes]], grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM to each leader (a warm shutdown for every system here), then SIGKILL to what is left of ours."""
        procs = list(procs)
        for proc in procs:
            if proc.poll() is None:
                _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait(5)
            if proc in self.live:
                self.live.remove(proc)
            # Children left behind by a leader that is gone (a pool's workers) go too.
            leftovers = self.ours(group=proc.pid)
            for child in leftovers:
                _signal(child, signal.SIGTERM)
            if leftovers:
                time.sleep(1)
                for child in self.ours(group=proc.pid):
                    _signal(child, signal.SIGKILL)

    def stop_all(self) -> None:
        self.stop(reversed(list(self.live)), grace=10)

    def strays(self) -> list[str]:
        found = []
        for proc in self.ours():
            try:
                found.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
            except Exception:  # noqa: BLE001 - gone meanwhile
                continue
        return found

    def kill_strays(self) -> None:
        for proc in self.ours():
            _signal(proc, signal.SIGKILL)


def _signal(proc: Any, signum: int) -> None:
    """Signal one process (a Popen or a psutil.Process) by itself, never a whole group."""
    try:
        if isinstance(proc, subprocess.Popen):
            if proc.poll() is None:
                proc.send_signal(signum)
        else:
            proc.send_signal(signum)  # psutil checks the process is still the one it looked at
    except Exception:  # noqa: BLE001 - already gone
        pass


def ensure_database(url: str) -> str:
    """Create the PostgreSQL database ``url`` names if it is missing; returns its name."""
    import psycopg
    from psycopg import conninfo, sql

    name = str(conninfo.conninfo_to_dict(url).get("dbname") or "jobs_peers")
    admin = conninfo.make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            log(f"creating database {name}")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def process_tree(procs: Iterable[Any]) -> list[Any]:
    import psutil

    tree: list[Any] = []
    for proc in procs:
        try:
            root = psutil.Process(proc.pid)
            tree += [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
    return tree


def find_postmaster(backend_pid: int) -> Any:
    """The PostgreSQL server process, as the parent of this run's own backend; None if it is not on this machine
    (another host or container) or its CPU times cannot be read."""
    import psutil

    try:
        postmaster = psutil.Process(backend_pid).parent()
        if postmaster is None or "postgres" not in postmaster.name():
            return None
        postmaster.cpu_times()
        for child in postmaster.children():
            child.cpu_times()
    except psutil.Error:
        return None
    return postmaster


def tree_cpu(procs: Iterable[Any]) -> float:
    import psutil

    total = 0.0
    for proc in process_tree(procs):
        try:
            times = proc.cpu_times()
            # A forking worker's work horses live for one job each: once reaped, their CPU is in the parent's.
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def tree_memory(procs: Iterable[subprocess.Popen[bytes]]) -> dict[str, float]:
    """RSS summed over a worker's process tree (shared pages counted once per process), and PSS (shared split)."""
    import psutil

    rss = pss = 0.0
    count = 0
    for proc in process_tree(procs):
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
        count += 1
    return {"rss_mb": rss / 2**20, "pss_mb": pss / 2**20, "processes": count}


# --------------------------------------------------------------------------------------------------------------
# Worker configurations


@dataclass(frozen=True)
class Config:
    key: str
    kind: str  # noop | sleep | ping
    label: str


@dataclass
class WorkerSpec:
    argvs: list[list[str]]
    executing: int  # processes that run handlers (the clock starts once each has finished a job)
    description: str


@dataclass
class Measured:
    """Every repetition's value of every metric, per system."""

    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    details: dict[tuple[str, str], list[dict[str, float]]] = field(default_factory=dict)
    notes: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, metric: str, system: str, value: float | None) -> None:
        if value is not None:
            self.values.setdefault((metric, system), []).append(value)

    def add_detail(self, what: str, system: str, counts: dict[str, float]) -> None:
        self.details.setdefault((what, system), []).append(counts)

    def median(self, metric: str, system: str) -> float | None:
        got = self.values.get((metric, system))
        return statistics.median(got) if got else None

    def median_detail(self, what: str, system: str) -> dict[str, float]:
        runs = self.details.get((what, system), [])
        keys = {k for run in runs for k in run}
        return {k: statistics.median(run.get(k, 0.0) for run in runs) for k in keys}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="jobs-peers-"))
        self.procs = Procs(self.workdir)
        self.redis_port = 0
        self.redis: Any = None
        self.db: Any = None  # psycopg, or sqlite3 with --database sqlite
        self.sqlite = args.database == "sqlite"
        if self.sqlite:
            self.database_url = f"sqlite:///{self.workdir / 'bench.sqlite3'}"
        else:
            self.database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
        self.our_concurrency = False
        self.versions: dict[str, str] = {}
        self._sql_dirs = 0
        self.failed = False
        self.postmaster: Any = None  # psutil.Process of the PostgreSQL server, when it runs on this machine

    # ---- setup

    def setup(self) -> None:
        for peer in self.args.systems:
            if peer not in DJANGO_SYSTEMS:
                ensure_venv(peer)
        self.start_redis()
        self.setup_database()
        self.versions.update({system: self.version(system) for system in self.args.systems})
        self.versions["code"] = git_state()
        help_text = subprocess.run(
            [sys.executable, "-m", "django", "jobs_worker", "--help"],
            cwd=ROOT,
            env=self.env("ours"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.our_concurrency = "--concurrency" in help_text

    def start_redis(self) -> None:
        from redis import Redis

        self.redis_port = free_port()
        server = shutil.which("redis-server") or "redis-server"
        self.procs.start(
            "redis-server",
            [server, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(self.workdir), "--loglevel", "warning"],
            dict(os.environ),
        )
        self.redis = Redis(host="127.0.0.1", port=self.redis_port)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.redis.ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start:\n" + self.procs.tail("redis-server")) from None
                time.sleep(0.05)
        self.versions["redis-server"] = str(self.redis.info("server")["redis_version"])

    @property
    def database_name(self) -> str:
        return "SQLite (WAL, synchronous=NORMAL)" if self.sqlite else "PostgreSQL"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def setup_database(self) -> None:
        if self.sqlite:
            self.setup_sqlite()
            return
        import psycopg

        name = ensure_database(self.database_url)
        self.migrate()
        self.db = psycopg.connect(self.database_url, autocommit=True)
        # The run truncates the job tables again and again: never in a database that holds anyone else's jobs.
        foreign = self.db.execute("SELECT count(*) FROM jobs_joblog WHERE job_type NOT LIKE 'bench-%'").fetchone()
        if foreign is not None and foreign[0]:
            raise RuntimeError(
                f"{name} holds {foreign[0]} jobs that are not this benchmark's; refusing to empty it. "
                "Point BENCH_DATABASE_URL at a database of its own."
            )
        self.versions["postgresql"] = str(self.db.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        self.postmaster = find_postmaster(int(self.db.execute("SELECT pg_backend_pid()").fetchone()[0]))  # type: ignore[index]

    def setup_sqlite(self) -> None:
        import sqlite3

        # A new file in this run's directory; bench.settings takes tests.settings' SQLite options (WAL,
        # synchronous=NORMAL, IMMEDIATE transactions, a busy timeout), which are the demo's.
        self.migrate()
        self.db = sqlite3.connect(self.database_url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)
        self.db.execute("PRAGMA synchronous=NORMAL")  # as the workers' connections (WAL is the file's own mode)
        journal = self.db.execute("PRAGMA journal_mode").fetchone()[0]
        self.versions["sqlite"] = f"{sqlite3.sqlite_version} ({journal})"

    def migrate(self) -> None:
        """Our tables always (the run's checks and resets read them), the baseline's when it is measured."""
        for system in DJANGO_SYSTEMS:
            if system == "ours" or system in self.args.systems:
                argv = [sys.executable, "-m", "django", "migrate", "--verbosity", "0"]
                subprocess.run(argv, cwd=ROOT, env=self.env(system), check=True)

    def commit_latency(self, count: int = 200) -> str:
        """p50/p90 of a one-row autocommit INSERT: what one durable SQL write costs on this machine right now."""
        self.db.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (x int)")
        took = []
        for i in range(count):
            t0 = time.perf_counter()
            self.db.execute(f"INSERT INTO bench_commit_probe VALUES ({'?' if self.sqlite else '%s'})", (i,))
            took.append((time.perf_counter() - t0) * 1000)
        self.db.execute("DROP TABLE bench_commit_probe")
        return f"p50 {percentile(took, 50):.2f} ms, p90 {percentile(took, 90):.2f} ms"

    def version(self, system: str) -> str:
        python = self.python(system)
        dist = {"ours": "rq", "django-rq": "django-rq", "rq": "rq", "celery": "celery", "dramatiq": "dramatiq"}[system]
        out = subprocess.run(
            [python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
            capture_output=True,
            text=True,
            check=True,
        )
        return f"{dist} {out.stdout.strip()}"

    def env(self, system: str, sql_dir: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "BENCH_SQL_COUNT_DIR")}
        env.update(PYTHONPATH=str(ROOT), BENCH_REDIS_URL=self.redis_url, PYTHONDONTWRITEBYTECODE="1")
        if system in DJANGO_SYSTEMS:
            env.update(DJANGO_SETTINGS_MODULE=SETTINGS[system], DATABASE_URL=self.database_url)
        if system == "ours":
            env["REDIS_URL"] = self.redis_url
            if sql_dir is not None:
                env["BENCH_SQL_COUNT_DIR"] = str(sql_dir)
        return env

    def python(self, system: str) -> str:
        return sys.executable if system in DJANGO_SYSTEMS else str(VENVS / system / "bin" / "python")

    def close(self) -> None:
        self.procs.stop_all()
        if self.db is not None:
            self.db.close()
        strays = self.procs.strays()
        if strays:
            log("stray processes found and killed:\n  " + "\n  ".join(strays))
            self.procs.kill_strays()
        else:
            log("cleanup: every process this run started has exited (checked by the mark in their environment)")
        if self.failed or self.args.keep_logs:
            log(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- helpers

    def reset(self) -> None:
        """Empty Redis (the private server holds nothing else), our job tables and the baseline's."""
        self.redis.flushall()
        tables = [
            row[0]
            for row in self.db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND (name LIKE 'jobs\\_%' ESCAPE '\\' OR name LIKE 'naive\\_%' ESCAPE '\\')"
                if self.sqlite
                else "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND (tablename LIKE 'jobs\\_%' OR tablename LIKE 'naive\\_%')"
            )
        ]
        if self.sqlite:
            for table in tables:
                self.db.execute(f'DELETE FROM "{table}"')  # this connection does not enforce foreign keys
        elif tables:
            self.db.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")

    def sql_dir(self) -> Path:
        self._sql_dirs += 1
        path = self.workdir / f"sql-{self._sql_dirs}"
        path.mkdir()
        return path

    def driver(
        self, system: str, action: str, *options: str, sql_dir: Path | None = None, timeout: float = 600
    ) -> dict[str, Any]:
        argv = [self.python(system), "-m", "bench.peer_tasks.driver", system, action, *options]
        return self.procs.run(f"{system} {action}", argv, self.env(system, sql_dir), timeout)

    def fill(self, system: str, kind: str, n: int, processes: int = 2) -> float:
        """Load the queue with n jobs (workers stopped), from a few driver processes at once to save time."""
        started = time.monotonic()
        shares = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
        drivers = []
        for i, share in enumerate(shares):
            options = ["--kind", kind, "--n", str(share), "--total", str(n), "--batch", str(self.args.batch)]
            argv = [self.python(system), "-m", "bench.peer_tasks.driver", system, "fill", *options]
            drivers.append(self.procs.start(f"{system}-fill-{i}", argv, self.env(system)))
        for i, proc in enumerate(drivers):
            try:
                code = proc.wait(timeout=1800)
            except subprocess.TimeoutExpired:
                code = -1
            if code != 0:
                self.procs.stop(drivers, grace=2)
                raise RuntimeError(f"{system} fill failed ({code}):\n{self.procs.tail(f'{system}-fill-{i}')}")
            self.procs.live.remove(proc)
        return time.monotonic() - started

    def command_counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for name, stats in self.redis.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            if command in ("info", "config", "ping"):  # the orchestrator's own look-ups
                continue
            counts[command] += int(stats["calls"])
        return counts

    def redis_reads(self) -> int:
        return int(self.redis.info("stats")["total_reads_processed"])

    def redis_cpu(self) -> float:
        info = self.redis.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def postgres_cpu(self) -> float:
        """CPU seconds of the PostgreSQL server so far (nan when it cannot be read): its processes, and the
        backends it already reaped, such as those of a forking worker's horses."""
        return tree_cpu([self.postmaster]) if self.postmaster is not None else math.nan

    def pg_stats(self) -> dict[str, float]:
        if self.sqlite:
            return {}  # SQLite keeps no such statistics; the statement counts still come from sqlcount
        # Backends flush their statistics when they exit: wait for the workers' connections to be gone.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            row = self.db.execute(
                "SELECT numbackends FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            if row[0] <= 1:
                break
            time.sleep(0.1)
        self.db.execute("SELECT pg_stat_clear_snapshot()")
        row = self.db.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_fetched, sessions "
            "FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        names = ("transactions", "rollbacks", "rows inserted", "rows updated", "rows deleted", "rows fetched")
        names += ("connections",)
        return dict(zip(names, (float(v) for v in row), strict=True))

    def job_statuses(self, system: str) -> dict[str, int]:
        table = "jobs_joblog" if system == "ours" else "naive_tasklog"
        return dict(self.db.execute(f"SELECT status, count(*) FROM {table} GROUP BY status").fetchall())

    # ---- worker commands

    def workers(self, system: str, config: Config) -> WorkerSpec:
        a = self.args
        py = self.python(system)
        if system == "ours":
            base = [py, "-m", "django", "jobs_worker", "--queues", "bench", "--logging-level", "WARNING"]
            simple = [*base, "--worker-class", "simple"]
            if config.key == "noop-fork":
                return WorkerSpec([base], 1, "1 jobs_worker (forking, the default)")
            if config.key in ("noop-1", "latency"):
                return WorkerSpec([simple], 1, "1 jobs_worker (simple)")
            if config.key.startswith("profile-"):
                clock = config.key.removeprefix("profile-")
                out = str(self.workdir / f"ours-worker-{clock}.prof")
                profiled = [py, "-m", "bench.peer_tasks.profiled", out, clock, *simple[3:]]
                return WorkerSpec([profiled], 1, f"1 jobs_worker (simple) under cProfile ({clock} clock)")
            if config.key == "noop-2":
                return WorkerSpec([simple, simple], 2, "2 jobs_worker (simple)")
            if config.key == "noop-conc":
                conc = [*base, "--concurrency", str(a.our_concurrency)]
                return WorkerSpec([conc, conc], 2, f"2 jobs_worker --concurrency {a.our_concurrency}")
            if config.key == "latency-conc":
                conc = [*base, "--concurrency", str(a.our_concurrency)]
                return WorkerSpec([conc], 1, f"1 jobs_worker --concurrency {a.our_concurrency}")
            if self.our_concurrency:
                per = max(1, a.io_concurrency // 2)
                conc = [*base, "--concurrency", str(per)]
                return WorkerSpec([conc, conc], 2, f"2 jobs_worker --concurrency {per}")
            return WorkerSpec([simple] * a.io_concurrency, a.io_concurrency, f"{a.io_concurrency} jobs_worker (simple)")
        if system == "django-rq":
            manage = [py, "-m", "django"]
            simple = ["--worker-class", "rq.worker.SimpleWorker", "--verbosity", "0", "bench"]
            if config.key == "noop-fork":
                forking = [*manage, "rqworker", "--verbosity", "0", "bench"]
                return WorkerSpec([forking], 1, "rqworker (Worker: forks a work horse per job)")
            if config.key in ("noop-1", "latency"):
                return WorkerSpec([[*manage, "rqworker", *simple]], 1, "rqworker SimpleWorker")
            n = 2 if config.key == "noop-2" else a.io_concurrency
            pool = [*manage, "rqworker-pool", "--num-workers", str(n), *simple]
            return WorkerSpec([pool], n, f"rqworker-pool --num-workers {n} SimpleWorker")
        if system == "rq":
            rq = str(VENVS / "rq" / "bin" / "rq")
            single = [rq, "worker", "-u", self.redis_url, "-w", "rq.worker.SimpleWorker", "--logging_level", "WARNING"]

            def pool(n: int) -> list[str]:
                return [rq, "worker-pool", "-u", self.redis_url, "-n", str(n), "-w", "rq.worker.SimpleWorker"] + [
                    "-l",
                    "WARNING",
                    "bench",
                ]

            if config.key == "noop-fork":
                forking = [rq, "worker", "-u", self.redis_url, "--logging_level", "WARNING", "bench"]
                return WorkerSpec([forking], 1, "rq worker (Worker: forks a work horse per job)")
            if config.key in ("noop-1", "latency"):
                return WorkerSpec([[*single, "bench"]], 1, "rq worker SimpleWorker")
            if config.key == "noop-2":
                return WorkerSpec([pool(2)], 2, "rq worker-pool -n 2 SimpleWorker")
            n = a.io_concurrency
            return WorkerSpec([pool(n)], n, f"rq worker-pool -n {n} SimpleWorker")
        if system == "celery":
            celery = str(VENVS / "celery" / "bin" / "celery")
            base = [celery, "-A", "bench.peer_tasks.celery_tasks", "worker", "-Q", "bench", "--loglevel", "WARNING"]
            if config.key in ("noop-1", "latency"):
                return WorkerSpec([[*base, "-P", "prefork", "-c", "1"]], 1, "celery worker -P prefork -c 1")
            if config.key == "noop-2":
                return WorkerSpec([[*base, "-P", "prefork", "-c", "2"]], 2, "celery worker -P prefork -c 2")
            n = a.io_concurrency
            return WorkerSpec([[*base, "-P", "threads", "-c", str(n)]], 1, f"celery worker -P threads -c {n}")
        dramatiq = str(VENVS / "dramatiq" / "bin" / "dramatiq")
        base = [dramatiq, "bench.peer_tasks.dramatiq_tasks", "-Q", "bench"]
        if config.key in ("noop-1", "latency"):
            return WorkerSpec([[*base, "-p", "1", "-t", "8"]], 1, "dramatiq -p 1 -t 8")
        if config.key == "noop-2":
            return WorkerSpec([[*base, "-p", "2", "-t", "8"]], 2, "dramatiq -p 2 -t 8")
        per = max(1, a.io_concurrency // 2)
        return WorkerSpec([[*base, "-p", "2", "-t", str(per)]], 2, f"dramatiq -p 2 -t {per}")

    # ---- measurements

    def measure_enqueue(self, system: str, bulk: bool) -> dict[str, Any] | None:
        n = self.args.bulk_jobs if bulk else self.args.enqueue_jobs
        self.reset()
        sql_dir = self.sql_dir() if system == "ours" else None
        pg_before = self.pg_stats() if system in DJANGO_SYSTEMS else {}
        self.redis.config_resetstat()
        if bulk:
            out = self.driver(system, "bulk", "--n", str(n), "--batch", str(self.args.batch), sql_dir=sql_dir)
            if out.get("unsupported"):
                return None
            submitted = n + int(out["warmup"])
        else:
            out = self.driver(system, "enqueue", "--n", str(n), "--warmup", "20", sql_dir=sql_dir)
            submitted = n + 20
        commands = self.command_counts()
        result: dict[str, Any] = {
            "rate": n / out["seconds"],
            "commands": sum(commands.values()) / submitted,
            "by_command": {k: v / submitted for k, v in commands.items()},
        }
        if system in DJANGO_SYSTEMS:
            result["sql"] = self.sql_per_job(sql_dir, pg_before, submitted)
        return result

    def sql_per_job(self, sql_dir: Path | None, pg_before: dict[str, float], jobs: int) -> dict[str, float]:
        pg_after = self.pg_stats()
        out = {f"pg {k}": (pg_after[k] - pg_before[k]) / jobs for k in pg_after if k != "rows fetched"}
        statements: Counter[str] = Counter()
        files = list(sql_dir.glob("*.json")) if sql_dir is not None else []
        for path in files:
            statements.update(json.loads(path.read_text()))
        if files:
            out["statements"] = sum(statements.values()) / jobs
            for verb, count in statements.items():
                out[f"  {verb}"] = count / jobs
        return out

    def measure_processing(self, system: str, config: Config, n: int) -> dict[str, Any]:
        spec = self.workers(system, config)
        self.reset()
        fill_seconds = self.fill(system, config.kind, n)
        # Work horses leave through os._exit, before sqlcount writes: for them only pg_stat_database counts.
        sql_dir = self.sql_dir() if system == "ours" and config is not NOOP_FORK else None
        pg_before = self.pg_stats() if system in DJANGO_SYSTEMS else {}
        redis = self.redis
        redis.config_resetstat()
        reads_before = self.redis_reads()
        env = self.env(system, sql_dir)
        started = time.time()
        procs = [self.procs.start(f"{system}-{config.key}-{i}", argv, env) for i, argv in enumerate(spec.argvs)]
        samples: list[tuple[float, ...]] = []  # time, done, worker CPU s, redis-server CPU s, PostgreSQL CPU s
        polls = 0
        timeout = 120 + n / (5 if config.kind == "sleep" else 10)
        deadline = time.monotonic() + timeout
        try:
            while True:
                done = int(redis.get(DONE) or 0)
                polls += 1
                samples.append((time.time(), done, tree_cpu(procs), self.redis_cpu(), self.postgres_cpu()))
                if done >= n:
                    break
                for i, proc in enumerate(procs):
                    if proc.poll() is not None:
                        name = f"{system}-{config.key}-{i}"
                        raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.procs.tail(name)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{system} {config.key}: {done}/{n} jobs done after {timeout:.0f} s")
                time.sleep(POLL_SECONDS)
            memory = tree_memory(procs)
            starts = [line.decode().split() for line in redis.lrange(STARTS, 0, -1)]
            finished = [float(x) for x in redis.lrange(FINISHED, 0, -1)]
        finally:
            self.procs.stop(procs)
        final_done = int(redis.get(DONE) or 0)
        commands = self.command_counts()
        reads = self.redis_reads() - reads_before
        # Since the reset, the workers' own: the marker opens one per process that runs it (every work horse).
        connections = int(redis.info("stats")["total_connections_received"]) - len({s[0] for s in starts})
        # Take out the marker's commands and the orchestrator's own (INFO and CONFIG are never counted).
        commands["incrby"] -= final_done  # redis-py's incr() sends INCRBY
        commands["rpush"] -= len(starts) + len(finished)
        commands["get"] -= polls + 1
        commands["lrange"] -= 2
        commands = Counter({k: v for k, v in commands.items() if v > 0})
        reads -= 2 * polls + 6 + final_done  # each poll is GET + INFO; the marker's INCR is a round trip too

        if config is NOOP_FORK:  # every work horse is a new process to the marker; the worker is the one that counts
            starts = sorted(starts, key=lambda start: float(start[1]))[:1]
        rate, window_start, window_note = steady_rate(starts, finished, n, spec.executing)
        result: dict[str, Any] = {
            "rate": rate,
            "cold_rate": n / (finished[0] - started) if finished else None,
            "fill_seconds": fill_seconds,
            "commands": sum(commands.values()) / n,
            "by_command": {k: v / n for k, v in commands.items()},
            "reads": reads / n,
            "connections": connections / n,
            "memory": memory,
            "window": window_note,
            "duplicates": final_done - n,
        }
        result.update(cpu_per_job(samples, window_start, n))
        if system in DJANGO_SYSTEMS:
            result["sql"] = self.sql_per_job(sql_dir, pg_before, n)
            statuses = self.job_statuses(system)
            if statuses.get("succeeded", 0) != n:
                result["problem"] = f"JobLog statuses after the run: {statuses}"
        if final_done != n:
            result["problem"] = f"the marker counted {final_done} runs for {n} jobs"
        return result

    def measure_latency(self, system: str, samples: int, key: str = "latency") -> dict[str, Any]:
        spec = self.workers(system, Config(key, "ping", ""))
        self.reset()
        procs = [self.procs.start(f"{system}-latency-{i}", argv, self.env(system)) for i, argv in enumerate(spec.argvs)]
        try:
            self.driver(system, "latency", "--samples", "0", "--warmup", "1", "--first-timeout", "120")
            time.sleep(1.0)  # at rest: started, one job run, idle
            memory = tree_memory(procs)
            out = self.driver(system, "latency", "--samples", str(samples), "--warmup", "5", "--first-timeout", "2")
        finally:
            self.procs.stop(procs)
        # A lost sample (its handler never started within the driver's timeout) counts as that timeout.
        ms = [v * 1000 for v in out["latencies"]] + [out["timeout"] * 1000] * out["lost"]
        calls = [v * 1000 for v in out["submit_calls"]]
        return {
            "lost": out["lost"],
            "p50": percentile(ms, 50),
            "p95": percentile(ms, 95),
            "p99": percentile(ms, 99),
            "submit_p50": percentile(calls, 50),
            "memory": memory,
        }


def steady_rate(starts: list[list[str]], finished: list[float], n: int, executing: int) -> tuple[float, float, str]:
    """Jobs per second from the moment every worker process had finished its first job to the last completion.

    Returns the rate, the start of that window and a note when the window had to be chosen otherwise.
    """
    if not finished:
        raise RuntimeError("no completion time recorded")
    firsts: dict[str, tuple[float, int]] = {}
    for pid, when, count in starts:
        if pid not in firsts or float(when) < firsts[pid][0]:
            firsts[pid] = (float(when), int(count))
    ordered = sorted(firsts.values())
    note = ""
    if len(ordered) < executing:
        note = f"only {len(ordered)} of {executing} processes ran a job"
    # The last process to get going; a straggler that only started in the second half is ignored.
    usable = [s for s in ordered if s[1] <= n // 2] or ordered[:1]
    start_time, start_count = usable[min(len(usable), executing) - 1]
    if len(usable) < len(ordered):
        note = f"{len(ordered) - len(usable)} process(es) started late and were ignored"
    end = finished[0]
    if end <= start_time or n - start_count <= 0:
        raise RuntimeError("the steady-state window is empty: use more jobs")
    return (n - start_count) / (end - start_time), start_time, note


def cpu_per_job(samples: list[tuple[float, ...]], begin_at: float, n: int) -> dict[str, float]:
    """Worker, redis-server and PostgreSQL CPU per job over the samples taken once every job-running process was
    busy (PostgreSQL's only when it could be read)."""
    first = next((s for s in samples if s[0] >= begin_at and s[1] < n), None)
    if first is None or first[1] > n * 0.8:
        first = next((s for s in samples if s[1] > 0), samples[0])
    last = samples[-1]
    jobs = last[1] - first[1]
    if jobs <= 0:
        return {}
    out = {"worker_cpu_ms": (last[2] - first[2]) * 1000 / jobs, "redis_cpu_us": (last[3] - first[3]) * 1e6 / jobs}
    if not math.isnan(last[4] - first[4]):
        out["postgres_cpu_us"] = (last[4] - first[4]) * 1e6 / jobs
    return out


def git_state() -> str:
    """The commit measured, and whether jobs/ had uncommitted changes (the numbers are of the working tree)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "jobs"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return head.stdout.strip() + (" + uncommitted changes in jobs/" if dirty.stdout.strip() else "")


def ensure_venv(name: str) -> None:
    """bench/.venvs/<name> with the peer installed; created on first use, reinstalled when the pins change."""
    venv = VENVS / name
    stamp = venv / ".bench-requirements"
    wanted = json.dumps(PEER_REQUIREMENTS[name])
    if stamp.exists() and stamp.read_text() == wanted and (venv / "bin" / "python").exists():
        return
    log(f"installing {' '.join(PEER_REQUIREMENTS[name])} into {venv.relative_to(ROOT)} ...")
    VENVS.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    if not (venv / "bin" / "python").exists():
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + PEER_REQUIREMENTS[name],
        check=True,
    )
    stamp.write_text(wanted)


# --------------------------------------------------------------------------------------------------------------
# The run


NOOP_1 = Config("noop-1", "noop", "no-op jobs, 1 worker process")
NOOP_2 = Config("noop-2", "noop", "no-op jobs, 2 worker processes")
NOOP_CONC = Config("noop-conc", "noop", "no-op jobs, 2 processes, ours with --concurrency")
NOOP_FORK = Config("noop-fork", "noop", "no-op jobs, 1 forking worker (a work horse per job)")
IO = Config("io", "sleep", "50 ms sleep jobs")
FORKING = ("ours", "django-rq", "rq")  # the systems with a worker that forks a work horse per job


def run(bench: Bench) -> Measured:
    a = bench.args
    m = Measured()
    systems = list(a.systems)
    configs = [NOOP_1, NOOP_2] if "noop" in a.phases else []
    pool = "noop" in a.phases or "pool" in a.phases
    configs += [NOOP_CONC] if bench.our_concurrency and "ours" in systems and pool else []
    configs += [NOOP_FORK] if "fork" in a.phases and set(FORKING) & set(systems) else []
    configs += [IO] if "io" in a.phases else []
    for rep in range(a.repeat):
        order = systems[rep % len(systems) :] + systems[: rep % len(systems)]  # spread drift over the systems
        log(f"--- repetition {rep + 1}/{a.repeat} (order: {', '.join(order)})")
        for system in order if "enqueue" in a.phases else []:
            single = bench.measure_enqueue(system, bulk=False)
            assert single is not None
            m.add("enqueue", system, single["rate"])
            m.add("cmd-enqueue", system, single["commands"])
            if "sql" in single:
                m.add_detail("sql-enqueue", system, single["sql"])
            bulk = bench.measure_enqueue(system, bulk=True)
            m.add("enqueue-bulk", system, bulk["rate"] if bulk else None)
            log(
                f"{system:>9} enqueue {single['rate']:8.0f}/s ({single['commands']:.1f} cmds/job)   bulk "
                + (f"{bulk['rate']:8.0f}/s" if bulk else "n/a")
            )
        for config in configs:
            for system in order:
                if (config is NOOP_CONC and system != "ours") or (config is NOOP_FORK and system not in FORKING):
                    continue  # Celery and Dramatiq have no worker that forks per job
                n = a.io_jobs if config.kind == "sleep" else a.fork_jobs if config is NOOP_FORK else a.jobs
                r = bench.measure_processing(system, config, n)
                m.add(config.key, system, r["rate"])
                m.notes[(config.key, system)] = bench.workers(system, config).description
                if config is NOOP_1:
                    m.add("rss-after", system, r["memory"]["rss_mb"])
                    m.add("pss-after", system, r["memory"]["pss_mb"])
                if config is NOOP_FORK:
                    m.add("conn-noop-fork", system, r["connections"])
                if config in (NOOP_1, NOOP_2, NOOP_CONC, NOOP_FORK):
                    m.add(f"cmd-{config.key}", system, r["commands"])
                    m.add(f"reads-{config.key}", system, r["reads"])
                    m.add(f"cpu-{config.key}", system, r.get("worker_cpu_ms"))
                    m.add(f"rcpu-{config.key}", system, r.get("redis_cpu_us"))
                    m.add(f"pgcpu-{config.key}", system, r.get("postgres_cpu_us"))
                    m.add_detail(f"commands-{config.key}", system, r["by_command"])
                    if "sql" in r:
                        m.add_detail(f"sql-{config.key}", system, r["sql"])
                extra = f"  [{r['window']}]" if r["window"] else ""
                if "problem" in r:
                    extra += f"  PROBLEM: {r['problem']}"
                    bench.failed = True
                log(
                    f"{system:>9} {config.key:<9} {r['rate']:8.0f} jobs/s (incl. start-up {r['cold_rate'] or 0:6.0f})"
                    f"  {r['commands']:5.1f} cmds/job  {r.get('worker_cpu_ms', 0):5.2f} ms CPU/job"
                    f"  RSS {r['memory']['rss_mb']:5.0f} MB{extra}"
                )
        for system in order if "latency" in a.phases else []:
            lat = bench.measure_latency(system, a.latency_samples)
            for key in ("p50", "p95", "p99"):
                m.add(f"lat-{key}", system, lat[key])
            m.add("submit-p50", system, lat["submit_p50"])
            m.add("lat-lost", system, lat["lost"])
            m.add("rss-rest", system, lat["memory"]["rss_mb"])
            m.add("procs-rest", system, lat["memory"]["processes"])
            m.add("pss-rest", system, lat["memory"]["pss_mb"])
            m.notes[("latency", system)] = bench.workers(system, Config("latency", "ping", "")).description
            log(
                f"{system:>9} latency p50 {lat['p50']:.2f} ms  p95 {lat['p95']:.2f} ms  p99 {lat['p99']:.2f} ms"
                f"  RSS at rest {lat['memory']['rss_mb']:.0f} MB"
                + (f"  LOST {lat['lost']} (counted as 2 s)" if lat["lost"] else "")
            )
            if system == "ours" and bench.our_concurrency:
                lat = bench.measure_latency(system, a.latency_samples, key="latency-conc")
                for key in ("p50", "p95", "p99"):
                    m.add(f"lat-conc-{key}", system, lat[key])
                log(f"{system:>9} latency --concurrency p50 {lat['p50']:.2f} ms  p99 {lat['p99']:.2f} ms")
    return m


def report(bench: Bench, m: Measured) -> None:
    a = bench.args
    systems = list(a.systems)
    peers = [s for s in systems if s != "ours"]
    rows: list[tuple[str, str, bool, Callable[[float], str]]] = [
        ("enqueue", "enqueue: one call per job, jobs/s", True, "{:,.0f}".format),
        ("enqueue-bulk", f"enqueue: bulk (batches of {a.batch}), jobs/s", True, "{:,.0f}".format),
        ("noop-1", "no-op jobs, 1 worker process, jobs/s", True, "{:,.0f}".format),
        ("noop-2", "no-op jobs, 2 worker processes, jobs/s", True, "{:,.0f}".format),
    ]
    if bench.our_concurrency:
        rows.append(
            ("noop-conc", f"no-op, 2 procs, ours --concurrency {a.our_concurrency}, jobs/s", True, "{:,.0f}".format)
        )
    rows += [
        ("noop-fork", "no-op jobs, 1 forking worker (a process per job), jobs/s", True, "{:,.0f}".format),
        ("io", f"50 ms sleep jobs, {a.io_concurrency} at once, jobs/s", True, "{:,.0f}".format),
        ("lat-p50", "latency submit->handler start p50, ms", False, "{:.2f}".format),
        ("lat-p95", "latency p95, ms", False, "{:.2f}".format),
        ("lat-p99", "latency p99, ms", False, "{:.2f}".format),
        ("lat-lost", "latency samples not started within 2 s", False, "{:.0f}".format),
        ("lat-conc-p50", f"latency p50, ours --concurrency {a.our_concurrency} (1 proc), ms", False, "{:.2f}".format),
        ("lat-conc-p99", f"latency p99, ours --concurrency {a.our_concurrency} (1 proc), ms", False, "{:.2f}".format),
        ("submit-p50", "submit call alone p50, ms", False, "{:.2f}".format),
        ("procs-rest", "worker processes (1-process configuration)", False, "{:.0f}".format),
        ("rss-rest", "worker RSS at rest, MB", False, "{:.0f}".format),
        ("rss-after", f"worker RSS after {a.jobs:,} jobs (1 proc), MB", False, "{:.0f}".format),
        ("pss-after", f"worker PSS after {a.jobs:,} jobs (1 proc), MB", False, "{:.0f}".format),
        ("cmd-enqueue", "Redis commands per enqueue (single)", False, "{:.1f}".format),
        ("cmd-noop-1", "Redis commands per job, worker (1 proc)", False, "{:.1f}".format),
        ("reads-noop-1", "Redis reads per job (~round trips), worker", False, "{:.1f}".format),
        ("cpu-noop-1", "worker CPU per job (1 proc), ms", False, "{:.2f}".format),
        ("rcpu-noop-1", "redis-server CPU per job (1 proc), us", False, "{:.0f}".format),
        ("pgcpu-noop-1", "PostgreSQL CPU per job (1 proc), us", False, "{:.0f}".format),
        ("cmd-noop-2", "Redis commands per job, worker (2 procs)", False, "{:.1f}".format),
        ("cpu-noop-2", "worker CPU per job (2 procs), ms", False, "{:.2f}".format),
        ("pgcpu-noop-2", "PostgreSQL CPU per job (2 procs), us", False, "{:.0f}".format),
        ("cmd-noop-fork", "Redis commands per job, forking worker", False, "{:.1f}".format),
        ("conn-noop-fork", "Redis connections opened per job, forking worker", False, "{:.2f}".format),
        ("cpu-noop-fork", "worker CPU per job with its work horse, forking, ms", False, "{:.2f}".format),
        ("pgcpu-noop-fork", "PostgreSQL CPU per job, forking worker, us", False, "{:.0f}".format),
    ]
    if bench.our_concurrency:
        rows.append(("cmd-noop-conc", "Redis commands per job (ours --concurrency)", False, "{:.1f}".format))
        rows.append(("reads-noop-conc", "Redis reads per job (~round trips, --concurrency)", False, "{:.1f}".format))
        rows.append(("cpu-noop-conc", "worker CPU per job, ours --concurrency (2 procs), ms", False, "{:.2f}".format))
        rows.append(("pgcpu-noop-conc", "PostgreSQL CPU per job, ours --concurrency, us", False, "{:.0f}".format))

    header = [f"metric (median of {a.repeat})", *systems]
    if "ours" in systems:
        header += [f"ours/{p}" for p in peers]
    table: list[list[str]] = []
    for key, label, _higher, fmt in rows:
        values = {s: bench_value(m, key, s) for s in systems}
        cells = [label] + [fmt(values[s]) if values[s] is not None else "n/a" for s in systems]
        if "ours" in systems:
            for p in peers:
                ours, peer = values["ours"], values[p]
                if key == "noop-conc":
                    peer = m.median("noop-2", p)
                elif key.startswith("lat-conc-"):
                    peer = m.median(key.replace("lat-conc-", "lat-"), p)
                cells.append(f"{ours / peer:.2f}" if ours is not None and peer else "n/a")
        table.append(cells)
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    log("")
    log("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    log(line)
    for row in table:
        log("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    log(line)
    log("ratio ours/peer: above 1 is better for rates, below 1 is better for latency, memory, commands and CPU.")
    if bench.our_concurrency:
        log("the --concurrency row's ratios compare with the peers' 2-process row.")

    log("")
    log("worker configurations:")
    titles = (("noop-1", "1 process"), ("noop-2", "2 processes"), ("noop-fork", "forking"), ("io", "50 ms jobs"))
    titles += (("latency", "latency"),)
    for key, title in titles:
        log(f"  {title:<12} " + "; ".join(f"{s}: {m.notes.get((key, s), 'n/a')}" for s in systems))
    if bench.our_concurrency:
        log(f"  {'concurrency':<12} ours: {m.notes.get(('noop-conc', 'ours'), 'n/a')}")

    for key, title in (("noop-1", "1 worker process"), ("noop-2", "2 worker processes"), ("noop-fork", "forking")):
        if not any(m.details.get((f"commands-{key}", system)) for system in systems):
            continue
        log("")
        log(f"Redis commands per job while processing no-op jobs, {title} (marker commands taken out):")
        for system in systems:
            detail = m.median_detail(f"commands-{key}", system)
            top = sorted(detail.items(), key=lambda kv: -kv[1])
            shown = ", ".join(f"{k} {v:.2f}" for k, v in top if v >= 0.05)
            log(f"  {system:<9} {sum(detail.values()):5.1f}: {shown}")
    for system in (s for s in DJANGO_SYSTEMS if s in systems):
        log("")
        if system == "ours":
            log("SQL per job, ours (statements counted in the Django processes; transactions and rows from")
            log("pg_stat_database on the bench database, which also sees the orchestrator's few queries):")
        else:
            log(f"SQL per job, {system} (transactions and rows from pg_stat_database, as for ours):")
        for key, title in (
            ("sql-enqueue", "submit()"),
            ("sql-noop-1", "worker, 1 process"),
            ("sql-noop-2", "worker, 2 processes"),
            ("sql-noop-conc", "worker, --concurrency"),
            ("sql-noop-fork", "worker, forking"),
        ):
            detail = m.median_detail(key, system)
            if detail:
                log(f"  {title:<22} " + ", ".join(f"{k.strip()} {v:.2f}" for k, v in sorted(detail.items())))


def bench_value(m: Measured, key: str, system: str) -> float | None:
    return m.median(key, system)


# Where a profiled function lives, by the path of its file (or the name of a built-in).
AREAS = (
    ("/rq/", "rq"),
    ("/redis/", "redis-py"),
    ("/django/db/", "Django ORM"),
    ("/django/", "Django (other)"),
    ("/psycopg", "psycopg"),
    ("/jobs/", "jobs app"),
    ("/bench/", "bench marker"),
    ("socket", "socket I/O (Redis, PostgreSQL)"),
    ("select", "waiting (select/poll)"),
    ("poll", "waiting (select/poll)"),
    ("lock", "locks and threads"),
    ("thread", "locks and threads"),
    ("json", "json"),
    ("pickle", "pickle"),
)


def profile_ours(bench: Bench, clock: str) -> None:
    """One more no-op run of ours, 1 simple worker under cProfile: where its time goes, by area and function."""
    import pstats

    n = min(bench.args.jobs, 2000)
    r = bench.measure_processing("ours", Config(f"profile-{clock}", "noop", ""), n)
    what = "wall clock: waits on Redis and PostgreSQL included" if clock == "wall" else "main thread CPU time"
    log("")
    log(f"cProfile ({what}) of one jobs_worker (simple) over {n:,} no-op jobs, {r['rate']:.0f} jobs/s profiled")
    log("(the profiler slows Python code down: read the shares, not the absolute times)")
    stats = pstats.Stats(str(bench.workdir / f"ours-worker-{clock}.prof"))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    areas: Counter[str] = Counter()
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        where = f"{filename} {name}".lower()
        area = next((label for needle, label in AREAS if needle in where), "other (stdlib, interpreter)")
        areas[area] += tottime
    total = sum(areas.values())
    log(f"self time by area ({total:.1f} s in all, start-up and idle waits included):")
    for area, seconds in areas.most_common():
        log(f"  {area:<32} {seconds:7.2f} s  {100 * seconds / total:5.1f} %  {1000 * seconds / n:6.3f} ms/job")
    log("")
    log("top functions by cumulative time, per job (ms):")
    rows = sorted(raw.items(), key=lambda kv: -kv[1][3])
    shown = 0
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in rows:
        if not any(part in filename for part in ("/jobs/", "/rq/", "/redis/", "/django/", "/psycopg/")):
            continue
        short = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        log(
            f"  {1000 * cumtime / n:7.3f} cum {1000 * tottime / n:7.3f} self {calls / n:6.1f} calls/job  "
            f"{short}:{line}({name})"
        )
        shown += 1
        if shown >= 40:
            break


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, one repetition unless --repeat is given")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions; the table shows medians (default 3)")
    parser.add_argument("--jobs", type=int, default=None, help="no-op jobs per processing run (default 10,000)")
    parser.add_argument("--fork-jobs", type=int, default=None, help="no-op jobs per forking-worker run (1,000)")
    parser.add_argument("--io-jobs", type=int, default=None, help="50 ms jobs per run (default 2,000)")
    parser.add_argument("--io-concurrency", type=int, default=16, help="total concurrency for 50 ms jobs (16)")
    parser.add_argument("--enqueue-jobs", type=int, default=None, help="single submissions timed (default 5,000)")
    parser.add_argument("--bulk-jobs", type=int, default=None, help="bulk submissions timed (default 20,000)")
    parser.add_argument("--batch", type=int, default=500, help="jobs per bulk call (default 500)")
    parser.add_argument("--latency-samples", type=int, default=None, help="latency samples per run (default 300)")
    parser.add_argument(
        "--our-concurrency", type=int, default=8, help="ours --concurrency per process, when it exists (8)"
    )
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS), help="default: all five")
    parser.add_argument(
        "--phases",
        nargs="*",
        choices=PHASES,
        default=list(PHASES),
        help="measure only these (default: all): enqueue, noop (1 and 2 processes, and ours --concurrency), "
        "pool (only ours --concurrency), fork (a forking worker: ours, django-rq and rq), io (50 ms jobs), latency; "
        "none with --profile: only the profile",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, profile one no-op run of ours (1 process) with cProfile (wall clock)",
    )
    parser.add_argument(
        "--database",
        choices=("postgresql", "sqlite"),
        default="postgresql",
        help="ours on PostgreSQL (BENCH_DATABASE_URL) or on a new SQLite file in WAL mode, as in the demo",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs and the temporary directory")
    args = parser.parse_args()
    quick = {"repeat": 1, "jobs": 1000, "io_jobs": 320, "enqueue_jobs": 500, "bulk_jobs": 2000, "latency_samples": 50}
    quick["fork_jobs"] = 100
    full = {"repeat": 3, "jobs": 10_000, "io_jobs": 2000, "enqueue_jobs": 5000, "bulk_jobs": 20_000, "fork_jobs": 1000}
    full["latency_samples"] = 300
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.repeat < 1 or args.jobs < 100 or args.fork_jobs < 20 or args.io_jobs < 2 * args.io_concurrency:
        parser.error("--repeat >= 1, --jobs >= 100, --fork-jobs >= 20, --io-jobs >= 2 x --io-concurrency")
    for module in ("django", "psutil", "psycopg", "redis"):
        if importlib.util.find_spec(module) is None:
            parser.error(f"{module} is missing: run this with the project's .venv/bin/python (pip install psutil)")

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    bench = Bench(args)
    started = time.monotonic()
    try:
        bench.setup()
        load = os.getloadavg()
        log(
            f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
            + "; ".join(f"{k}: {v}" for k, v in bench.versions.items())
            + f"; ours --concurrency: {'yes' if bench.our_concurrency else 'no'}"
        )
        log(f"{bench.database_name} durable one-row INSERT (autocommit) now: {bench.commit_latency()}")
        if args.phases:
            report(bench, run(bench))
        if args.profile and "ours" in args.systems:
            profile_ours(bench, "wall")
        load = os.getloadavg()
        log(f"\nfinished in {time.monotonic() - started:.0f} s; load average at the end {load[0]:.2f} {load[1]:.2f}")
        log(f"{bench.database_name} durable one-row INSERT (autocommit) at the end: {bench.commit_latency()}")
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        bench.failed = True
        return 130
    except Exception:
        bench.failed = True
        raise
    finally:
        bench.close()
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
