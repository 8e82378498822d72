"""A/B on SQLite: the demo's configuration without and with the old lock file around the hot write transactions.

    python -m bench.sqlite_lock_ab                          # 5,000 no-op jobs, 200 latency samples, 3 rounds
    python -m bench.sqlite_lock_ab --jobs 500 --samples 30 --repeat 1

SQLite as the demo runs it (WAL, synchronous=NORMAL, IMMEDIATE transactions, a busy timeout: bench.settings takes
project/settings.py's options), a new file per run, and the default engine as subprocesses (``jobs_worker --queues
bench --processes 2 --concurrency 8``). Variant "lock file" adds bench.write_lock, which wraps the start and the
success of a batch (jobs.lifecycle.batches._start_orm and _succeed_orm) in the flock-based turn the product had
before the one engine; the product itself has no such lock. Per run: no-op jobs/s (pre-loaded queue, the clock from
the moment both processes finished a job to the last one), then, with the same workers idle, the latency from
submit() to the handler's start (p50/p99), and the "database is locked" errors in the workers' logs. Every job's row
must say succeeded. Rounds alternate the order; the table shows medians.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import Report, fmt, median, percentile, ratio
from bench.peers_report import steady_rate

WORKER = ["jobs_worker", "--queues", "bench", "--processes", "2", "--concurrency", "8", "--logging-level", "WARNING"]
VARIANTS = {"busy timeout only (shipped)": "0", "lock file (old)": "1"}
LOCKED = "database is locked"


class LockAB:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="jobs-sqlite-lock-ab-"))
        self.procs = harness.Processes(self.workdir)
        self.server = harness.RedisServer(self.procs)
        self.redis = self.server.client()

    def driver(self, env: dict[str, str], action: str, *options: str) -> dict[str, Any]:
        argv = [sys.executable, "-m", "bench.peer_tasks.driver", "ours", action, *options]
        return self.procs.run_json(f"driver {action}", argv, env, timeout=900)

    def run(self, variant: str, lock: str, index: int) -> dict[str, Any]:
        n = self.args.jobs
        database = self.workdir / f"run-{index}.sqlite3"
        env = harness.django_env("bench.settings", f"sqlite:///{database}", self.server.url)
        env["BENCH_SQLITE_WRITE_LOCK"] = lock
        harness.migrate(env)
        self.redis.flushall()
        self.driver(env, "fill", "--kind", "noop", "--n", str(n), "--batch", "500")
        name = f"workers-{index}"
        workers = self.procs.start(name, harness.django_command(*WORKER), env)
        try:
            deadline = time.monotonic() + 120 + n / 10
            while int(self.redis.get("bench:done") or 0) < n:
                if workers.poll() is not None:
                    raise RuntimeError(f"the workers exited:\n{self.procs.log_text(name)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{variant}: not every job ran in time")
                time.sleep(0.1)
            starts = [line.decode().split() for line in self.redis.lrange("bench:starts", 0, -1)]
            finished = [float(x) for x in self.redis.lrange("bench:finished", 0, -1)]
            rate, _, note = steady_rate(starts, finished, n, 2)
            statuses = self.wait_for_rows(database, n)
            out = self.driver(env, "latency", "--samples", str(self.args.samples), "--warmup", "5")
        finally:
            self.procs.stop([workers])
        if statuses.get("succeeded", 0) != n or len(statuses) != 1:
            raise RuntimeError(f"{variant}: rows by status after the run: {statuses} for {n} jobs")
        used_lock = Path(f"{database}-jobs-write-lock").exists()
        if used_lock != (lock == "1"):
            raise RuntimeError(f"{variant}: the lock file was {'' if used_lock else 'not '}used")
        ms = [v * 1000 for v in out["latencies"]] + [out["timeout"] * 1000] * out["lost"]
        locked = self.procs.log_text(name, tail=0).count(LOCKED)
        return {"rate": rate, "p50": percentile(ms, 50), "p99": percentile(ms, 99), "locked": locked, "note": note}

    @staticmethod
    def wait_for_rows(database: Path, n: int, timeout: float = 60) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        with sqlite3.connect(database, timeout=30) as conn:
            while True:
                statuses = dict(conn.execute("SELECT status, count(*) FROM jobs_joblog GROUP BY status").fetchall())
                if statuses.get("succeeded", 0) >= n or time.monotonic() > deadline:
                    return statuses
                time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs per run (default 5,000)")
    parser.add_argument("--samples", type=int, default=200, help="latency samples per run (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of both variants (default 3)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs and the databases")
    harness.add_arguments(parser)
    args = parser.parse_args()
    if args.jobs < 50 or args.samples < 1 or args.repeat < 1:
        parser.error("--jobs >= 50, --samples >= 1, --repeat >= 1")
    ab = LockAB(args)
    report = Report("sqlite_lock_ab")
    failed = False
    try:
        facts = harness.machine_facts(redis=ab.server)
        facts["SQLite"] = sqlite3.sqlite_version
        report.facts_line(facts)
        results: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
        index = 0
        for round_ in range(args.repeat):
            order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                index += 1
                r = ab.run(variant, VARIANTS[variant], index)
                results[variant].append(r)
                report.line(
                    f"- round {round_ + 1}, {variant}: {r['rate']:,.0f} jobs/s, latency p50 {r['p50']:.2f} ms "
                    f"p99 {r['p99']:.2f} ms, {r['locked']} '{LOCKED}' in the workers' log"
                    + (f" [{r['note']}]" if r["note"] else "")
                )
        shipped, old = list(VARIANTS)

        def med(variant: str, key: str) -> float | None:
            return median(r[key] for r in results[variant])

        rows = []
        for key, label, spec in (
            ("rate", f"no-op jobs/s ({args.jobs:,} jobs)", ",.0f"),
            ("p50", "latency submit -> handler start p50, ms", ".2f"),
            ("p99", "latency p99, ms", ".2f"),
            ("locked", f"'{LOCKED}' errors in the workers' logs", ".0f"),
        ):
            a, b = med(shipped, key), med(old, key)
            rows.append([label, fmt(a, spec), fmt(b, spec), fmt(ratio(b, a), ".2f")])
        report.line()
        report.table([f"SQLite, median of {args.repeat}", shipped, old, "lock file / shipped"], rows)
        report.line()
        report.line(f"Workers: `manage.py {' '.join(WORKER)}`.")
        report.save(not args.no_save)
    except BaseException:
        failed = True
        raise
    finally:
        ab.procs.close()
        if failed or args.keep_logs:
            harness.log(f"logs kept in {ab.workdir}")
        else:
            import shutil

            shutil.rmtree(ab.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
