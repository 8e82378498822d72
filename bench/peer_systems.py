"""The systems bench.peers compares, and how each one's workers are started for each measurement.

Ours and the django-rq baseline (bench/naive/) run with this interpreter; rq, Celery and Dramatiq each in a
virtual environment of their own under bench/.venvs/, created on first use (from PyPI) and reused after; a change
of their pins below reinstalls.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from bench.harness import ROOT, django_command, log

VENVS = ROOT / "bench" / ".venvs"
PEER_REQUIREMENTS = {
    "rq": ["rq>=3,<4"],
    "celery": ["celery[redis]>=5.4"],
    "dramatiq": ["dramatiq[redis]>=1.17"],
}
SYSTEMS = ("ours", "django-rq", "rq", "celery", "dramatiq")
# Django projects on the bench database: ours, and the baseline a team would write without it.
DJANGO_SYSTEMS = ("ours", "django-rq")
SETTINGS = {"ours": "bench.settings", "django-rq": "bench.naive.settings"}
FORKING = ("ours", "django-rq", "rq")  # a job isolated in a process of its own: Celery and Dramatiq have none


@dataclass(frozen=True)
class Config:
    """One processing measurement: its job kind, the systems it runs, and whose row its ratios compare with."""

    key: str
    kind: str  # the driver's kind: noop | isolated | sleep | ping
    label: str
    systems: tuple[str, ...] = SYSTEMS
    peer_key: str = ""  # the peers' row this one's ratios use (default: its own)
    forks: bool = False  # a process per job: the clock starts at the first job's end, not each process's first


NOOP = Config("noop", "noop", "no-op jobs, jobs/s")
POOL = Config("pool", "noop", "no-op, ours --processes 2 --concurrency 8, jobs/s", systems=("ours",), peer_key="noop")
ISO = Config("iso", "isolated", "no-op, a process per job, 1 worker process (1 slot), jobs/s", FORKING, forks=True)
ISO_DEFAULT = Config(
    "iso-default", "isolated", "no-op, a process per job, ours with no flags, jobs/s", ("ours",), "iso", forks=True
)
IO = Config("io", "sleep", "50 ms sleep jobs, jobs/s")
LATENCY = Config("latency", "ping", "latency")
PHASES = {
    "enqueue": [],
    "noop": [NOOP],
    "pool": [POOL],
    "iso": [ISO, ISO_DEFAULT],
    "io": [IO],
    "latency": [],
}


@dataclass
class WorkerSpec:
    argvs: list[list[str]]
    executing: int  # processes that run handlers (the clock starts once each has finished a job)
    description: str


def workers(system: str, config: Config, redis_url: str, io_concurrency: int) -> WorkerSpec:
    """The worker command lines of ``system`` for ``config`` (NOOP and LATENCY share each system's 2-core setup)."""
    key = config.key
    n_io = io_concurrency
    if system == "ours":
        default = django_command("jobs_worker")  # no flags: what a newcomer runs
        if key == "pool":
            pool = django_command("jobs_worker", "--queues", "bench", "--processes", "2", "--concurrency", "8")
            return WorkerSpec([pool], 2, "jobs_worker --queues bench --processes 2 --concurrency 8")
        if key == "iso":
            one = django_command("jobs_worker", "--queues", "bench", "--processes", "1", "--concurrency", "1")
            return WorkerSpec([one], 1, "jobs_worker --queues bench --processes 1 --concurrency 1")
        return WorkerSpec([default], 2, "jobs_worker (no flags: a process per CPU, 8 slots each)")
    if system == "django-rq":
        simple = ["--worker-class", "rq.worker.SimpleWorker", "--verbosity", "0", "bench"]
        if key == "iso":
            forking = django_command("rqworker", "--verbosity", "0", "bench")
            return WorkerSpec([forking], 1, "rqworker (rq's Worker: a work horse per job)")
        n = n_io if key == "io" else 2
        pool = django_command("rqworker-pool", "--num-workers", str(n), *simple)
        return WorkerSpec([pool], n, f"rqworker-pool --num-workers {n} (SimpleWorker)")
    if system == "rq":
        rq = str(VENVS / "rq" / "bin" / "rq")
        if key == "iso":
            forking = [rq, "worker", "-u", redis_url, "--logging_level", "WARNING", "bench"]
            return WorkerSpec([forking], 1, "rq worker (Worker: a work horse per job)")
        n = n_io if key == "io" else 2
        pool = [rq, "worker-pool", "-u", redis_url, "-n", str(n), "-w", "rq.worker.SimpleWorker", "-l", "WARNING"]
        return WorkerSpec([[*pool, "bench"]], n, f"rq worker-pool -n {n} (SimpleWorker)")
    if system == "celery":
        celery = str(VENVS / "celery" / "bin" / "celery")
        base = [celery, "-A", "bench.peer_tasks.celery_tasks", "worker", "-Q", "bench", "--loglevel", "WARNING"]
        if key == "io":
            return WorkerSpec([[*base, "-P", "threads", "-c", str(n_io)]], 1, f"celery worker -P threads -c {n_io}")
        return WorkerSpec([[*base, "-P", "prefork", "-c", "2"]], 2, "celery worker -P prefork -c 2")
    dramatiq = str(VENVS / "dramatiq" / "bin" / "dramatiq")
    threads = max(1, n_io // 2) if key == "io" else 8
    argv = [dramatiq, "bench.peer_tasks.dramatiq_tasks", "-Q", "bench", "-p", "2", "-t", str(threads)]
    return WorkerSpec([argv], 2, f"dramatiq -p 2 -t {threads}")


def python(system: str) -> str:
    return sys.executable if system in DJANGO_SYSTEMS else str(VENVS / system / "bin" / "python")


def version(system: str) -> str:
    dist = {"ours": "rq", "django-rq": "django-rq", "rq": "rq", "celery": "celery", "dramatiq": "dramatiq"}[system]
    out = subprocess.run(
        [python(system), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"{dist} {out.stdout.strip()}"


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
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + PEER_REQUIREMENTS[name], check=True)
    stamp.write_text(wanted)
