"""What every benchmark shares: its own Redis, the bench database, Django, processes, statistics and results.

Scripts run as modules from the repository root (``python -m bench.peers``). Each builds a ``Report`` of markdown
lines and tables, printed as they come and, unless ``--no-save``, written with the machine's facts to
``bench/results/<date>-<sha>-<script>.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# A database of the benchmarks' own: they empty its job tables over and over.
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/jobs_bench"
RUN_ENV = "BENCH_RUN"  # marks every process a run starts (Processes)
STOP_GRACE_SECONDS = 30.0


def log(message: str = "") -> None:
    print(message, flush=True)


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
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------------------------
# Statistics


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (``pct`` in 0-100)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))]


def median(values: Iterable[float]) -> float | None:
    got = list(values)
    return statistics.median(got) if got else None


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return ours / theirs if ours is not None and theirs else None


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


# ---------------------------------------------------------------------------------------------------------------
# Processes


class Processes:
    """Every process a run starts, each in its own session, stopped (with its children) however the run ends.

    Each carries BENCH_RUN=<run id> in its environment, inherited by its children: the only test of whether a
    process is ours, since process and group ids are reused by the system.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.live: list[subprocess.Popen[bytes]] = []
        self.run_id = uuid.uuid4().hex

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        logfile = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed right after the fork
        try:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**env, RUN_ENV: self.run_id},
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            logfile.close()
        self.live.append(proc)
        return proc

    def run_json(self, name: str, argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
        """Run a driver to completion and return the JSON object it printed last."""
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**env, RUN_ENV: self.run_id},
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

    def log_text(self, name: str, tail: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text[-tail:] if tail else text

    def marked(self, group: int | None = None) -> list[Any]:
        """Our live processes (psutil), optionally only those in process group ``group``."""
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
            # Children a leader left behind (a pool's processes) go too.
            leftovers = self.marked(group=proc.pid)
            for child in leftovers:
                _signal(child, signal.SIGTERM)
            if leftovers:
                time.sleep(1)
                for child in self.marked(group=proc.pid):
                    _signal(child, signal.SIGKILL)

    def close(self) -> list[str]:
        """Stop everything still running; returns (and logs) the strays found, and killed, after that."""
        self.stop(reversed(list(self.live)), grace=10)
        strays = []
        for proc in self.marked():
            try:
                strays.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
            except Exception:  # noqa: BLE001 - gone meanwhile
                continue
            _signal(proc, signal.SIGKILL)
        if strays:
            log("stray processes killed: " + "; ".join(strays))
        return strays


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


def process_tree(pids: Iterable[int]) -> list[Any]:
    import psutil

    tree: list[Any] = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            tree += [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
    return tree


def tree_cpu(pids: Iterable[int]) -> float:
    """CPU seconds of these processes and their descendants, reaped ones included (forked children's)."""
    import psutil

    total = 0.0
    for proc in process_tree(pids):
        try:
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def tree_memory(pids: Iterable[int]) -> dict[str, float]:
    """RSS summed over the process trees (shared pages counted once per process) and the number of processes."""
    import psutil

    rss = 0.0
    count = 0
    for proc in process_tree(pids):
        try:
            rss += proc.memory_info().rss
        except psutil.Error:
            continue
        count += 1
    return {"rss_mb": rss / 2**20, "processes": count}


# ---------------------------------------------------------------------------------------------------------------
# Redis, PostgreSQL, Django


class RedisServer:
    """A private redis-server on a free loopback port, without persistence: nothing else's traffic is in it."""

    def __init__(self, procs: Processes, name: str = "redis-server") -> None:
        self.procs = procs
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server") or "redis-server"
        argv = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.procs.workdir), "--loglevel", "warning"]
        self.proc = self.procs.start(self.name, argv, dict(os.environ))
        try:
            wait_until("redis-server", lambda: bool(self.client().ping()), timeout=15)
        except RuntimeError:
            raise RuntimeError("redis-server did not start:\n" + self.procs.log_text(self.name)) from None

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop([self.proc], grace=10)
            self.proc = None

    def client(self) -> Any:
        from redis import Redis

        return Redis(host="127.0.0.1", port=self.port)

    def version(self) -> str:
        return str(self.client().info("server")["redis_version"])


def database_url(default_name: str = "jobs_bench") -> str:
    """BENCH_DATABASE_URL, else the local PostgreSQL database ``default_name``."""
    return os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL.replace("jobs_bench", default_name)


def database_for(kind: str, workdir: Path, filename: str = "bench.sqlite3") -> str:
    """The bench database of that kind: PostgreSQL's (created if missing), or a fresh SQLite file in ``workdir``."""
    if kind == "postgresql":
        url = database_url()
        ensure_postgres_database(url)
        return url
    return f"sqlite:///{workdir / filename}"


def postgres_bench(procs: Processes) -> tuple[RedisServer, str]:
    """This process set up for the bench project on PostgreSQL and a private Redis: (the Redis, the database URL)."""
    redis = RedisServer(procs)
    url = database_for("postgresql", procs.workdir)
    setup_django(django_env("bench.settings", url, redis.url))
    return redis, url


def ensure_postgres_database(url: str) -> str:
    """Create the PostgreSQL database ``url`` names if it is missing; returns its name."""
    import psycopg
    from psycopg import conninfo, sql

    name = str(conninfo.conninfo_to_dict(url).get("dbname") or "jobs_bench")
    with psycopg.connect(conninfo.make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            log(f"creating database {name}")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def postgres_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def reset_job_tables(conn: Any, *, sqlite: bool = False) -> None:
    """Empty our job tables and the django-rq baseline's, refusing a database that holds anyone else's jobs."""
    if sqlite:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND (name LIKE 'jobs\\_%' ESCAPE '\\' OR name LIKE 'naive\\_%' ESCAPE '\\')"
            )
        ]
    else:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND (tablename LIKE 'jobs\\_%' OR tablename LIKE 'naive\\_%')"
            )
        ]
    if "jobs_joblog" in tables:
        foreign = conn.execute("SELECT count(*) FROM jobs_joblog WHERE job_type NOT LIKE 'bench-%'").fetchone()[0]
        if foreign:
            raise RuntimeError(
                f"the database holds {foreign} jobs that are not a benchmark's; refusing to empty it. "
                "Point BENCH_DATABASE_URL at a database of its own."
            )
    if sqlite:
        for table in tables:
            conn.execute(f'DELETE FROM "{table}"')
    elif tables:
        conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")


def django_env(settings: str, database: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a Django process of the benchmarks (this repository's code, these servers)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
    env.update(
        DJANGO_SETTINGS_MODULE=settings,
        DATABASE_URL=database,
        REDIS_URL=redis_url,
        BENCH_REDIS_URL=redis_url,
        PYTHONPATH=str(ROOT),
        PYTHONDONTWRITEBYTECODE="1",
        **extra,
    )
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "django", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)


def setup_django(env: dict[str, str], *, run_migrations: bool = True) -> None:
    """Django in this process, with ``env`` (from django_env) applied; migrates first unless told not to."""
    os.environ.update(env)
    import django

    django.setup()
    if run_migrations:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def django_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "django", *args]


# ---------------------------------------------------------------------------------------------------------------
# Facts and results


def git_sha() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def git_dirty() -> bool:
    out = subprocess.run(["git", "status", "--porcelain", "jobs", "bench"], cwd=ROOT, capture_output=True, text=True)
    return bool(out.stdout.strip())


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return found.group(1).strip() if found else "unknown"


def package_version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_facts(*, redis: RedisServer | None = None, postgres_url: str | None = None) -> dict[str, str]:
    facts = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "code": git_sha() + (" + uncommitted changes in jobs/ or bench/" if git_dirty() else ""),
        "CPUs": f"{os.cpu_count()} x {cpu_model()}",
        "load average": load(),
        "Python": platform.python_version(),
        "Django": package_version("django"),
        "rq": package_version("rq"),
        "redis-py": package_version("redis"),
    }
    if redis is not None:
        facts["Redis"] = redis.version()
    if postgres_url is not None:
        facts["PostgreSQL"] = postgres_version(postgres_url)
    return facts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-save", action="store_true", help="print only; do not write bench/results/<date>-<sha>-<script>.md"
    )


class Report:
    """Markdown printed as it comes, kept to be written to bench/results/ at the end."""

    def __init__(self, script: str, argv: Sequence[str] | None = None) -> None:
        self.script = script
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.lines: list[str] = []
        self.facts: dict[str, str] = {}

    def line(self, text: str = "") -> None:
        log(text)
        self.lines.append(text)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], *, align_first_left: bool = True) -> None:
        """A markdown table, its columns padded so it also reads as plain text."""
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

        def render(cells: Sequence[str]) -> str:
            padded = [
                str(c).ljust(w) if i == 0 and align_first_left else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "| " + " | ".join(padded) + " |"

        rule = ["-" * w if i == 0 and align_first_left else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
        self.line(render(header))
        self.line("| " + " | ".join(rule) + " |")
        for row in rows:
            self.line(render(row))

    def facts_line(self, facts: dict[str, str]) -> None:
        self.facts = facts
        log("; ".join(f"{k}: {v}" for k, v in facts.items()))

    def save(self, enabled: bool = True) -> Path | None:
        if not enabled:
            return None
        sha = git_sha()
        day = datetime.date.today().isoformat()
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{day}-{sha}-{self.script}.md"
        head = [f"# `{self.script}` at {sha}, {day}", "", f"`python -m bench.{self.script} {' '.join(self.argv)}`"]
        head += [""] + [f"- {k}: {v}" for k, v in self.facts.items()] + [""]
        path.write_text("\n".join(head + self.lines).rstrip() + "\n")
        log(f"\nresults written to {path.relative_to(ROOT)}")
        return path
