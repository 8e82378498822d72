"""Our jobs app side by side with the django-rq baseline, rq, Celery and Dramatiq: one run, one Redis, one
PostgreSQL, one table of medians with the ratio ours/peer.

    python -m bench.peers                      # full: --repeat 3, 10,000 no-op jobs per run
    python -m bench.peers --quick              # small counts, one repetition
    python -m bench.peers --systems ours celery --phases noop pool

Phases: enqueue (submit() one by one, and in bulk), noop (no-op jobs, each system's 2-process configuration; ours
is ``jobs_worker`` with no flags), pool (ours ``--processes 2 --concurrency 8``), iso (a process per job: ours on a
type declared ``isolation="process"``, with 1 process and 1 slot and with no flags, against rq's and django-rq's
forking workers), io (50 ms sleep jobs), latency (submit to handler start with an idle worker, and the workers' RSS
at rest). Every system runs in every repetition, in a rotated order. A rate is reported only once every job's row
says succeeded (ours and the baseline) and the marker counted every job exactly once.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import Report, percentile
from bench.peer_systems import (
    DJANGO_SYSTEMS,
    LATENCY,
    PHASES,
    SETTINGS,
    SYSTEMS,
    Config,
    ensure_venv,
    python,
    version,
    workers,
)
from bench.peers_report import cpu_per_job, steady_rate, summarize

DONE, STARTS, FINISHED = "bench:done", "bench:starts", "bench:finished"  # bench/peer_tasks/marker.py
POLL_SECONDS = 0.2
# Workers are stopped only after every job was counted (and its row checked): past this warm-shutdown grace a kill
# loses nothing measured (rq's worker-pool, for one, can take longer to leave).
STOP_GRACE_SECONDS = 10.0


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="jobs-peers-"))
        self.procs = harness.Processes(self.workdir)
        self.database_url = harness.database_url("jobs_peers")
        self.redis: Any = None
        self.server: harness.RedisServer | None = None
        self.db: Any = None
        self.postmaster: Any = None
        self.failed = False
        self.notes: dict[tuple[str, str], str] = {}  # (measurement, system) -> its worker command

    def setup(self) -> None:
        import psycopg

        for system in self.args.systems:
            if system not in DJANGO_SYSTEMS:
                ensure_venv(system)
        self.server = harness.RedisServer(self.procs)
        self.redis = self.server.client()
        harness.ensure_postgres_database(self.database_url)
        for system in DJANGO_SYSTEMS:
            if system == "ours" or system in self.args.systems:
                harness.migrate(self.env(system))
        self.db = psycopg.connect(self.database_url, autocommit=True)
        harness.reset_job_tables(self.db)
        self.postmaster = find_postmaster(int(self.db.execute("SELECT pg_backend_pid()").fetchone()[0]))

    def env(self, system: str) -> dict[str, str]:
        assert self.server is not None
        if system in DJANGO_SYSTEMS:
            return harness.django_env(SETTINGS[system], self.database_url, self.server.url)
        env = harness.django_env("", self.database_url, self.server.url)
        env.pop("DJANGO_SETTINGS_MODULE")
        return env

    def close(self) -> None:
        self.procs.close()
        if self.db is not None:
            self.db.close()
        if self.failed or self.args.keep_logs:
            harness.log(f"logs kept in {self.workdir}")
        else:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- helpers

    def reset(self) -> None:
        self.redis.flushall()
        harness.reset_job_tables(self.db)

    def driver(self, system: str, action: str, *options: str) -> dict[str, Any]:
        argv = [python(system), "-m", "bench.peer_tasks.driver", system, action, *options]
        return self.procs.run_json(f"{system} {action}", argv, self.env(system), timeout=900)

    def fill(self, system: str, kind: str, n: int, drivers: int = 2) -> None:
        """Load the queue with n jobs (no worker running), from a few driver processes at once."""
        shares = [n // drivers + (1 if i < n % drivers else 0) for i in range(drivers)]
        started = []
        for i, share in enumerate(shares):
            options = ["--kind", kind, "--n", str(share), "--total", str(n), "--batch", str(self.args.batch)]
            argv = [python(system), "-m", "bench.peer_tasks.driver", system, "fill", *options]
            started.append(self.procs.start(f"{system}-fill-{i}", argv, self.env(system)))
        for i, proc in enumerate(started):
            try:
                code = proc.wait(timeout=1800)
            except subprocess.TimeoutExpired:
                code = -1
            self.procs.live.remove(proc)
            if code != 0:
                raise RuntimeError(f"{system} fill failed ({code}):\n{self.procs.log_text(f'{system}-fill-{i}')}")

    def command_counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for name, stats in self.redis.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            if command.split("|")[0] not in ("info", "config", "ping"):  # the orchestrator's own look-ups
                counts[command] += int(stats["calls"])
        return counts

    def redis_cpu(self) -> float:
        info = self.redis.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def postgres_cpu(self) -> float:
        return harness.tree_cpu([self.postmaster.pid]) if self.postmaster is not None else math.nan

    def transactions(self) -> float:
        """Committed transactions on the bench database so far, once the workers' sessions have flushed theirs."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            row = self.db.execute("SELECT numbackends FROM pg_stat_database WHERE datname = current_database()")
            if row.fetchone()[0] <= 1:
                break
            time.sleep(0.1)
        self.db.execute("SELECT pg_stat_clear_snapshot()")
        sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        return float(self.db.execute(sql).fetchone()[0])

    def succeeded(self, system: str) -> dict[str, int]:
        table = "jobs_joblog" if system == "ours" else "naive_tasklog"
        return dict(self.db.execute(f"SELECT status, count(*) FROM {table} GROUP BY status").fetchall())

    def wait_for_rows(self, system: str, n: int, timeout: float = 60) -> dict[str, int]:
        """The rows' statuses once all n say succeeded (or at the timeout): the SQL write trails the handler."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = self.succeeded(system)
            if statuses.get("succeeded", 0) >= n or time.monotonic() > deadline:
                return statuses
            time.sleep(POLL_SECONDS)

    # ---- measurements

    def measure_enqueue(self, system: str, bulk: bool) -> dict[str, Any] | None:
        n = self.args.bulk_jobs if bulk else self.args.enqueue_jobs
        self.reset()
        xact_before = self.transactions() if system in DJANGO_SYSTEMS else 0.0
        self.redis.config_resetstat()
        if bulk:
            out = self.driver(system, "bulk", "--n", str(n), "--batch", str(self.args.batch))
            if out.get("unsupported"):
                return None
            submitted = n + int(out["warmup"])
        else:
            out = self.driver(system, "enqueue", "--n", str(n), "--warmup", "20")
            submitted = n + 20
        result = {"rate": n / out["seconds"], "commands": sum(self.command_counts().values()) / submitted}
        if system in DJANGO_SYSTEMS:
            result["transactions"] = (self.transactions() - xact_before) / submitted
        return result

    def measure_processing(self, system: str, config: Config, n: int) -> dict[str, Any]:
        assert self.server is not None
        spec = workers(system, config, self.server.url, self.args.io_concurrency)
        self.reset()
        self.fill(system, config.kind, n)
        xact_before = self.transactions() if system in DJANGO_SYSTEMS else 0.0
        self.redis.config_resetstat()
        reads_before = int(self.redis.info("stats")["total_reads_processed"])
        env = self.env(system)
        started = time.time()
        procs = [self.procs.start(f"{system}-{config.key}-{i}", a, env) for i, a in enumerate(spec.argvs)]
        pids = [p.pid for p in procs]
        samples: list[tuple[float, ...]] = []  # time, done, worker CPU, redis-server CPU, PostgreSQL CPU
        polls = 0
        timeout = 120 + n / (5 if config.kind == "sleep" else 2 if config.forks else 10)
        deadline = time.monotonic() + timeout
        statuses: dict[str, int] = {}
        try:
            while True:
                done = int(self.redis.get(DONE) or 0)
                polls += 1
                samples.append((time.time(), done, harness.tree_cpu(pids), self.redis_cpu(), self.postgres_cpu()))
                if done >= n:
                    break
                for i, proc in enumerate(procs):
                    if proc.poll() is not None:
                        name = f"{system}-{config.key}-{i}"
                        raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.procs.log_text(name)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{system} {config.key}: {done}/{n} jobs done after {timeout:.0f} s")
                time.sleep(POLL_SECONDS)
            memory = harness.tree_memory(pids)
            starts = [line.decode().split() for line in self.redis.lrange(STARTS, 0, -1)]
            finished = [float(x) for x in self.redis.lrange(FINISHED, 0, -1)]
            if system in DJANGO_SYSTEMS:
                statuses = self.wait_for_rows(system, n)
        finally:
            self.procs.stop(procs, grace=STOP_GRACE_SECONDS)
        final_done = int(self.redis.get(DONE) or 0)
        commands = self.command_counts()
        reads = int(self.redis.info("stats")["total_reads_processed"]) - reads_before
        # Take out the marker's commands and the orchestrator's own (INFO and CONFIG are not counted).
        commands["incrby"] -= final_done  # redis-py's incr() sends INCRBY
        commands["rpush"] -= len(starts) + len(finished)
        commands["get"] -= polls + 1
        commands["lrange"] -= 2
        commands = Counter({k: v for k, v in commands.items() if v > 0})
        reads -= 2 * polls + 6 + final_done
        if config.forks:  # every job's process is new to the marker: the clock starts at the first job's end
            starts = sorted(starts, key=lambda start: float(start[1]))[:1]
        rate, window_start, note = steady_rate(starts, finished, n, 1 if config.forks else spec.executing)
        result: dict[str, Any] = {
            "rate": rate,
            "cold_rate": n / (finished[0] - started) if finished else None,
            "commands": sum(commands.values()) / n,
            "by_command": {k: v / n for k, v in commands.items()},
            "reads": reads / n,
            "memory": memory,
            "note": note,
            "description": spec.description,
        }
        result.update(cpu_per_job(samples, window_start, n))
        problems = []
        if system in DJANGO_SYSTEMS:
            result["transactions"] = (self.transactions() - xact_before) / n
            statuses = self.succeeded(system)  # after the workers' warm shutdown too
            if statuses.get("succeeded", 0) != n or len(statuses) != 1:
                problems.append(f"rows by status after the run: {statuses} for {n} jobs")
        if final_done != n:
            problems.append(f"the marker counted {final_done} runs for {n} jobs")
        if problems:
            result["problem"] = "; ".join(problems)
        return result

    def measure_latency(self, system: str, samples: int) -> dict[str, Any]:
        assert self.server is not None
        spec = workers(system, LATENCY, self.server.url, self.args.io_concurrency)
        self.reset()
        procs = [self.procs.start(f"{system}-latency-{i}", a, self.env(system)) for i, a in enumerate(spec.argvs)]
        try:
            self.driver(system, "latency", "--samples", "0", "--warmup", "1", "--first-timeout", "120")
            time.sleep(1.0)  # at rest: started, one job run, idle
            memory = harness.tree_memory([p.pid for p in procs])
            out = self.driver(system, "latency", "--samples", str(samples), "--warmup", "5", "--first-timeout", "2")
        finally:
            self.procs.stop(procs, grace=STOP_GRACE_SECONDS)
        # A lost sample (its handler never started within the driver's timeout) counts as that timeout.
        ms = [v * 1000 for v in out["latencies"]] + [out["timeout"] * 1000] * out["lost"]
        calls = [v * 1000 for v in out["submit_calls"]]
        return {
            "lost": out["lost"],
            "p50": percentile(ms, 50),
            "p95": percentile(ms, 95),
            "p99": percentile(ms, 99),
            "submit_p50": percentile(calls, 50) if calls else None,
            "memory": memory,
            "description": spec.description,
        }


def find_postmaster(backend_pid: int) -> Any:
    """The PostgreSQL server process, as the parent of our own backend; None when not readable on this machine."""
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


def run(bench: Bench, report: Report) -> dict[tuple[str, str], list[float]]:
    """Every measurement, --repeat times; returns each (metric, system)'s values."""
    a = bench.args
    values: dict[tuple[str, str], list[float]] = {}

    def add(metric: str, system: str, value: float | None) -> None:
        if value is not None:
            values.setdefault((metric, system), []).append(value)

    configs = [c for phase in a.phases for c in PHASES[phase]]
    for rep in range(a.repeat):
        order = a.systems[rep % len(a.systems) :] + a.systems[: rep % len(a.systems)]
        report.line(f"repetition {rep + 1}/{a.repeat} (order: {', '.join(order)})")
        for system in order if "enqueue" in a.phases else []:
            single = bench.measure_enqueue(system, bulk=False)
            assert single is not None
            bulk = bench.measure_enqueue(system, bulk=True)
            add("enqueue", system, single["rate"])
            add("cmd-enqueue", system, single["commands"])
            add("xact-enqueue", system, single.get("transactions"))
            add("enqueue-bulk", system, bulk["rate"] if bulk else None)
            bulk_text = f"{bulk['rate']:8.0f}/s" if bulk else "n/a"
            report.line(f"    {system:>9} submit {single['rate']:8.0f}/s   bulk {bulk_text}")
        for config in configs:
            for system in (s for s in order if s in config.systems):
                n = a.io_jobs if config.kind == "sleep" else a.iso_jobs if config.forks else a.jobs
                r = bench.measure_processing(system, config, n)
                bench.notes[(config.key, system)] = r["description"]
                extra = f"  [{r['note']}]" if r["note"] else ""
                if "problem" in r:
                    extra += f"  PROBLEM: {r['problem']}: rate not counted"
                    bench.failed = True
                else:
                    add(config.key, system, r["rate"])
                for metric in ("commands", "reads", "cpu", "rcpu", "transactions"):
                    add(f"{metric}-{config.key}", system, r.get(metric))
                add(f"pgcpu-{config.key}", system, r.get("pgcpu") if system in DJANGO_SYSTEMS else None)
                for command, count in r["by_command"].items():
                    add(f"by:{config.key}:{command}", system, count)
                report.line(
                    f"    {system:>9} {config.key:<11} {r['rate']:8.0f} jobs/s (cold {r['cold_rate'] or 0:6.0f})"
                    f"  {r['commands']:5.1f} cmds/job  {r.get('cpu', 0):5.2f} ms CPU/job"
                    f"  RSS {r['memory']['rss_mb']:5.0f} MB{extra}"
                )
        for system in order if "latency" in a.phases else []:
            lat = bench.measure_latency(system, a.latency_samples)
            bench.notes[("latency", system)] = lat["description"]
            for key in ("p50", "p95", "p99", "lost"):
                add(f"lat-{key}", system, lat[key])
            add("submit-p50", system, lat["submit_p50"])
            memory = lat["memory"]
            add("procs-rest", system, memory["processes"])
            add("rss-rest", system, memory["rss_mb"])
            add("rss-rest-per", system, memory["rss_mb"] / max(1, memory["processes"]))
            report.line(
                f"    {system:>9} latency p50 {lat['p50']:.2f} ms  p95 {lat['p95']:.2f} ms  p99 {lat['p99']:.2f} ms"
                f"  RSS at rest {memory['rss_mb']:.0f} MB in {memory['processes']} processes"
                + (f"  LOST {lat['lost']} (counted as 2 s)" if lat["lost"] else "")
            )
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, one repetition unless --repeat is given")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions; the table shows medians (default 3)")
    parser.add_argument("--jobs", type=int, default=None, help="no-op jobs per processing run (default 10,000)")
    parser.add_argument("--iso-jobs", type=int, default=None, help="jobs per process-per-job run (default 1,000)")
    parser.add_argument("--io-jobs", type=int, default=None, help="50 ms jobs per run (default 2,000)")
    parser.add_argument("--io-concurrency", type=int, default=16, help="total concurrency for 50 ms jobs (16)")
    parser.add_argument("--enqueue-jobs", type=int, default=None, help="single submissions timed (default 5,000)")
    parser.add_argument("--bulk-jobs", type=int, default=None, help="bulk submissions timed (default 20,000)")
    parser.add_argument("--batch", type=int, default=500, help="jobs per bulk call (default 500)")
    parser.add_argument("--latency-samples", type=int, default=None, help="latency samples per run (default 300)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS), help="default: all five")
    parser.add_argument("--phases", nargs="+", choices=list(PHASES), default=list(PHASES), help="default: all")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs and the temporary directory")
    harness.add_arguments(parser)
    args = parser.parse_args()
    quick = {"repeat": 1, "jobs": 1000, "iso_jobs": 100, "io_jobs": 320, "enqueue_jobs": 500, "bulk_jobs": 2000}
    full = {"repeat": 3, "jobs": 10_000, "iso_jobs": 1000, "io_jobs": 2000, "enqueue_jobs": 5000, "bulk_jobs": 20_000}
    quick["latency_samples"], full["latency_samples"] = 50, 300
    for name, number in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, number)
    if args.repeat < 1 or args.jobs < 50 or args.iso_jobs < 10 or args.io_jobs < 2 * args.io_concurrency:
        parser.error("--repeat >= 1, --jobs >= 50, --iso-jobs >= 10, --io-jobs >= 2 x --io-concurrency")
    for module in ("django", "psutil", "psycopg", "redis"):
        if importlib.util.find_spec(module) is None:
            parser.error(f"{module} is missing: pip install -e '.[bench]' into this interpreter's environment")

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    bench = Bench(args)
    report = Report("peers")
    started = time.monotonic()
    try:
        bench.setup()
        assert bench.server is not None
        facts = harness.machine_facts(redis=bench.server, postgres_url=bench.database_url)
        facts["peers"] = ", ".join(version(s) for s in args.systems if s != "ours")
        report.facts_line(facts)
        summarize(bench, run(bench, report), report)
        report.line()
        report.line(f"Finished in {time.monotonic() - started:.0f} s; load average at the end {harness.load()}.")
        if bench.failed:
            report.line("SOME RUNS FAILED THEIR CHECK (see PROBLEM above): their rates are left out of the medians.")
        report.save(not args.no_save)
    except KeyboardInterrupt:
        harness.log("interrupted; stopping everything")
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
