"""Soak test: submit many jobs while killing workers and restarting (wiping) Redis; then prove nothing was lost.

    .venv/bin/python bench/soak.py --jobs 20000            # SQLite in a temp dir, a private redis-server
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/jobs_soak .venv/bin/python bench/soak.py --jobs 20000

It runs real processes: N `jobs_worker`s (fork and simple), one `jobs_scheduler` (which runs the reconciler), and a
redis-server without persistence, so every restart loses everything Redis held. A chaos thread SIGKILLs a random
worker (and its work horse) every few seconds and starts a replacement, and restarts Redis every so often. The
`soak` job type (tests/testapp/job_types.py) appends "start"/"done" lines to a per-process file that outlives both.

At the end every JobLog must be terminal and succeeded, each job must have completed exactly once unless an earlier
completion came from a process that was killed before it could record it (at-least-once delivery, reported
separately), and no handler run may be missing from the SQL history. Exit status 1 when anything was lost.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port, start_redis_server  # noqa: E402


def children_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


class Cluster:
    def __init__(self, env: dict[str, str], workdir: Path, redis_port: int) -> None:
        self.env = env
        self.workdir = workdir
        self.redis_port = redis_port
        self.redis = start_redis_server(redis_port, str(workdir))
        self.workers: list[subprocess.Popen[bytes]] = []
        self.killed_pids: set[int] = set()
        self.kills = 0
        self.redis_restarts = 0
        self.scheduler = self._spawn(["jobs_scheduler"], "scheduler")
        self.started = 0

    def _spawn(self, args: list[str], label: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{label}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [sys.executable, "-m", "django", *args, *(["--logging-level", "WARNING"] if "worker" in args[0] else [])],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return proc

    def start_worker(self) -> None:
        kind = "fork" if self.started % 2 else "simple"
        self.started += 1
        self.workers.append(self._spawn(["jobs_worker", "--worker-class", kind], f"worker-{self.started}"))

    def kill_random_worker(self) -> None:
        alive = [w for w in self.workers if w.poll() is None]
        if not alive:
            return
        victim = random.choice(alive)
        doomed = [victim.pid, *children_of(victim.pid)]
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)  # like a machine losing power: no cleanup at all
            except ProcessLookupError:
                pass
        self.killed_pids.update(doomed)
        victim.wait()
        self.workers.remove(victim)
        self.kills += 1
        self.start_worker()

    def restart_redis(self, down_for: float) -> None:
        self.redis.terminate()  # no persistence: it comes back empty
        self.redis.wait()
        time.sleep(down_for)
        self.redis = start_redis_server(self.redis_port, str(self.workdir))
        self.redis_restarts += 1

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                for pid in [proc.pid, *children_of(proc.pid)]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                proc.wait()
        self.redis.terminate()
        self.redis.wait()


def read_runs(workdir: Path) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """job id -> pids that started it / completed it."""
    starts: dict[str, list[int]] = collections.defaultdict(list)
    dones: dict[str, list[int]] = collections.defaultdict(list)
    for path in workdir.glob("runs-*.log"):
        pid = int(path.stem.split("-")[1])
        for line in path.read_text().splitlines():
            kind, job_id, _attempt = line.split()
            (starts if kind == "start" else dones)[job_id].append(pid)
    return starts, dones


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds between worker kills")
    parser.add_argument("--redis-restart-every", type=float, default=25.0, help="seconds between Redis restarts")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    random.seed(args.seed)

    workdir = Path(tempfile.mkdtemp(prefix="jobs-soak-"))
    redis_port = free_port()
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{workdir / 'soak.sqlite3'}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction
    from django.db.models import Count

    from jobs import submit
    from jobs.models import TERMINAL_STATUSES, JobEvent, JobLog

    call_command("migrate", verbosity=0)
    JobEvent.objects.all().delete()
    JobLog.objects.all().delete()

    cluster = Cluster(env, workdir, redis_port)
    for _ in range(args.workers):
        cluster.start_worker()

    stop_chaos = threading.Event()

    def chaos() -> None:
        next_kill = time.monotonic() + args.kill_every
        next_restart = time.monotonic() + args.redis_restart_every
        while not stop_chaos.wait(0.2):
            now = time.monotonic()
            if now >= next_kill:
                cluster.kill_random_worker()
                next_kill = now + args.kill_every * random.uniform(0.5, 1.5)
            if now >= next_restart:
                cluster.restart_redis(down_for=random.uniform(0.5, 3.0))
                next_restart = now + args.redis_restart_every * random.uniform(0.7, 1.3)

    chaos_thread = threading.Thread(target=chaos, daemon=True)
    began = time.monotonic()
    chaos_thread.start()
    submitted = 0
    try:
        while submitted < args.jobs:
            with transaction.atomic():
                for _ in range(min(200, args.jobs - submitted)):
                    submit("soak", {"dir": str(workdir)})
                    submitted += 1
        submit_seconds = time.monotonic() - began
        print(f"submitted {submitted} jobs in {submit_seconds:.1f} s", flush=True)

        deadline = began + args.timeout
        last_report = 0.0
        while time.monotonic() < deadline:
            unfinished = JobLog.objects.exclude(status__in=TERMINAL_STATUSES).count()
            if time.monotonic() - last_report > 10:
                counts = dict(JobLog.objects.values_list("status").annotate(n=Count("id")).order_by())
                print(
                    f"{time.monotonic() - began:6.0f} s  {counts}  kills={cluster.kills} "
                    f"redis_restarts={cluster.redis_restarts}",
                    flush=True,
                )
                last_report = time.monotonic()
            if not unfinished:
                break
            # Faults stop once most of the work is done, so the run can settle.
            if unfinished < args.jobs * 0.02:
                stop_chaos.set()
            time.sleep(1)
        elapsed = time.monotonic() - began
    finally:
        stop_chaos.set()
        chaos_thread.join(10)
        cluster.stop()

    starts, dones = read_runs(workdir)
    rows = list(JobLog.objects.values_list("id", "status", "attempts"))
    by_status = collections.Counter(status for _, status, _ in rows)
    not_terminal = sum(1 for _, status, _ in rows if status not in TERMINAL_STATUSES)
    failed = by_status.get("failed", 0) + by_status.get("canceled", 0)
    never_done = sum(1 for job_id, status, _ in rows if status == "succeeded" and not dones.get(str(job_id)))
    rerun_after_kill = unexplained_duplicates = unrecorded_runs = 0
    for job_id, _status, attempts in rows:
        finished_by = dones.get(str(job_id), [])
        if len(finished_by) > 1:
            # A completion by a process that was then killed never reached SQL: the job rightly ran again.
            if all(pid in cluster.killed_pids for pid in finished_by[:-1]):
                rerun_after_kill += 1
            else:
                unexplained_duplicates += 1
        unrecorded_runs += max(0, len(starts.get(str(job_id), [])) - attempts)
    lost = not_terminal + failed + never_done

    print()
    print("| figure | value |")
    print("|---|---:|")
    for name, value in [
        ("jobs submitted", submitted),
        ("jobs in SQL", len(rows)),
        ("succeeded", by_status.get("succeeded", 0)),
        ("worker processes SIGKILLed", cluster.kills),
        ("Redis restarts (data wiped)", cluster.redis_restarts),
        ("handler runs (starts)", sum(len(v) for v in starts.values())),
        ("lost (not terminal, failed, or succeeded without a run)", lost),
        ("completed twice with no kill to explain it", unexplained_duplicates),
        ("ran again after its worker was killed mid-job (at-least-once)", rerun_after_kill),
        ("handler runs missing from the SQL attempt count", unrecorded_runs),
        ("wall time (s)", round(elapsed, 1)),
        ("throughput under faults (jobs/s)", round(submitted / elapsed, 1)),
    ]:
        print(f"| {name} | {value} |")
    ok = lost == 0 and unexplained_duplicates == 0 and unrecorded_runs == 0 and len(rows) == submitted
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"\nNOT OK; logs kept in {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
