"""Soak: submit many jobs while killing worker processes and restarting (wiping) Redis; then prove nothing was lost.

    python -m bench.soak --jobs 20000                         # SQLite in a temp dir, a private redis-server
    python -m bench.soak --jobs 20000 --database postgresql   # BENCH_DATABASE_URL, default jobs_bench

It runs real processes: --workers ``jobs_worker`` supervisors (2 processes x 4 slots each), one ``jobs_scheduler``
(which runs the reconciler), and a redis-server without persistence, so every restart loses everything Redis held.
The recovery intervals are shortened as the test suite's are (bench.settings, BENCH_FAST_RECOVERY). A chaos thread
SIGKILLs a random worker process every few seconds (its supervisor starts another) and, every third time, a whole
supervisor with its processes (a replacement is started), and restarts Redis every so often. The bench-soak job type
appends "start"/"done" lines to a per-process file that outlives both.

At the end every JobLog must be succeeded; a job may have completed twice only if an earlier completion came from a
process that was killed before it could record it (at-least-once delivery, reported separately); and no handler run
may be missing from the SQL attempt count. Exit status 1 when anything was lost.
"""

from __future__ import annotations

import argparse
import collections
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import harness
from bench.harness import Report

WORKER = [
    "jobs_worker",
    "--queues",
    "bench-soak",
    "--processes",
    "2",
    "--concurrency",
    "4",
    "--logging-level",
    "WARNING",
]


class Cluster:
    def __init__(self, procs: harness.Processes, redis: harness.RedisServer, env: dict[str, str]) -> None:
        self.procs = procs
        self.redis = redis
        self.env = env
        self.workers: list[subprocess.Popen[bytes]] = []
        self.killed_pids: set[int] = set()
        self.kills = self.tree_kills = self.redis_restarts = self.started = 0
        self.scheduler = procs.start("scheduler", harness.django_command("jobs_scheduler"), env)

    def start_worker(self) -> None:
        self.started += 1
        self.workers.append(self.procs.start(f"worker-{self.started}", harness.django_command(*WORKER), env=self.env))

    def kill_something(self) -> None:
        """SIGKILL (no cleanup at all) one worker process, or every third time a whole supervisor tree."""
        import psutil

        alive = [w for w in self.workers if w.poll() is None]
        if not alive:
            return
        victim = random.choice(alive)
        try:
            children = psutil.Process(victim.pid).children(recursive=True)
        except psutil.Error:
            children = []
        self.kills += 1
        if children and self.kills % 3:
            child = random.choice(children)
            self.killed_pids.add(child.pid)
            child.kill()
            return
        self.tree_kills += 1
        for proc in [psutil.Process(victim.pid), *children]:
            self.killed_pids.add(proc.pid)
            try:
                proc.kill()
            except psutil.Error:
                pass
        victim.wait()
        self.workers.remove(victim)
        self.start_worker()

    def restart_redis(self, down_for: float) -> None:
        self.redis.stop()  # no persistence: it comes back empty
        time.sleep(down_for)
        self.redis.start()
        self.redis_restarts += 1

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        self.procs.stop([*self.workers, self.scheduler], grace=5)


def read_runs(workdir: Path) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """job id -> pids that started it / completed it, in the order of their attempts."""
    starts: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    dones: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for path in workdir.glob("runs-*.log"):
        pid = int(path.stem.split("-")[1])
        for line in path.read_text().splitlines():
            kind, job_id, attempt = line.split()
            (starts if kind == "start" else dones)[job_id].append((int(attempt), pid))
    return (
        {job: [pid for _, pid in sorted(runs)] for job, runs in starts.items()},
        {job: [pid for _, pid in sorted(runs)] for job, runs in dones.items()},
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="jobs_worker supervisors (default 2)")
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds between kills")
    parser.add_argument("--redis-restart-every", type=float, default=25.0, help="seconds between Redis restarts")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seed", type=int, default=None)
    harness.add_arguments(parser)
    args = parser.parse_args()
    random.seed(args.seed)

    workdir = Path(tempfile.mkdtemp(prefix="jobs-soak-"))
    procs = harness.Processes(workdir)
    report = Report("soak")
    ok = False
    try:
        redis = harness.RedisServer(procs)
        database = harness.database_for(args.database, workdir, "soak.sqlite3")
        env = harness.django_env("bench.settings", database, redis.url, BENCH_FAST_RECOVERY="1")
        harness.setup_django(env)
        from django.db import connection

        with connection.cursor() as cursor:
            harness.reset_job_tables(cursor, sqlite=connection.vendor == "sqlite")
        report.facts_line(harness.machine_facts(redis=redis, postgres_url=database if "postgres" in database else None))
        cluster = Cluster(procs, redis, env)
        for _ in range(args.workers):
            cluster.start_worker()
        ok, table = soak(args, cluster, workdir)
        report.line()
        report.table(["figure", "value"], table)
        if not ok:
            report.line(f"\nNOT OK; logs kept in {workdir}")
        report.save(not args.no_save)
    finally:
        procs.close()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


def soak(args: argparse.Namespace, cluster: Cluster, workdir: Path) -> tuple[bool, list[list[str]]]:
    """Submit, inflict the faults until (nearly) every job is done, then check the history against the runs."""
    from django.db import transaction
    from django.db.models import Count

    from jobs import submit
    from jobs.models import TERMINAL_STATUSES, JobLog

    stop_chaos = threading.Event()

    def chaos() -> None:
        next_kill = time.monotonic() + args.kill_every
        next_restart = time.monotonic() + args.redis_restart_every
        while not stop_chaos.wait(0.2):
            now = time.monotonic()
            if now >= next_kill:
                cluster.kill_something()
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
                    submit("bench-soak", {"dir": str(workdir)})
                    submitted += 1
        harness.log(f"submitted {submitted} jobs in {time.monotonic() - began:.1f} s")
        deadline = began + args.timeout
        last_report = 0.0
        while time.monotonic() < deadline:
            unfinished = JobLog.objects.exclude(status__in=TERMINAL_STATUSES).count()
            if time.monotonic() - last_report > 10:
                counts = dict(JobLog.objects.values_list("status").annotate(n=Count("id")).order_by())
                harness.log(
                    f"{time.monotonic() - began:6.0f} s  {counts}  kills={cluster.kills} "
                    f"redis_restarts={cluster.redis_restarts}"
                )
                last_report = time.monotonic()
            if not unfinished:
                break
            if unfinished < args.jobs * 0.02:  # faults stop once most of the work is done, so the run can settle
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
    not_succeeded = sum(1 for _, status, _ in rows if status != "succeeded")
    never_done = sum(1 for job_id, status, _ in rows if status == "succeeded" and not dones.get(str(job_id)))
    rerun_after_kill = unexplained = unrecorded = 0
    for job_id, _status, attempts in rows:
        finished_by = dones.get(str(job_id), [])
        if len(finished_by) > 1:
            # A completion by a process that was then killed never reached SQL: the job rightly ran again.
            if all(pid in cluster.killed_pids for pid in finished_by[:-1]):
                rerun_after_kill += 1
            else:
                unexplained += 1
        unrecorded += max(0, len(starts.get(str(job_id), [])) - attempts)
    lost = not_succeeded + never_done
    table = [
        ["jobs submitted", submitted],
        ["jobs in SQL", len(rows)],
        ["succeeded", by_status.get("succeeded", 0)],
        ["worker processes SIGKILLed (whole supervisors among them)", f"{cluster.kills} ({cluster.tree_kills})"],
        ["Redis restarts (data wiped)", cluster.redis_restarts],
        ["handler runs (starts)", sum(len(v) for v in starts.values())],
        ["lost (not succeeded, or succeeded without a run)", lost],
        ["completed twice with no kill to explain it", unexplained],
        ["ran again after its process was killed mid-job (at-least-once)", rerun_after_kill],
        ["handler runs missing from the SQL attempt count", unrecorded],
        ["wall time (s)", round(elapsed, 1)],
        ["throughput under faults (jobs/s)", round(submitted / elapsed, 1)],
    ]
    ok = lost == 0 and unexplained == 0 and unrecorded == 0 and len(rows) == submitted
    return ok, [[str(a), str(b)] for a, b in table]


if __name__ == "__main__":
    sys.exit(main())
