"""The statistics and the report of bench.peers: the steady-state clock, CPU per job, and the table of medians."""

from __future__ import annotations

import math
from typing import Any

from bench.harness import Report, fmt, median, ratio

PREVIOUS_POOL_RATIO = "1.76 at 93d716e, bench/results/2026-12-07-93d716e-peers.md"


def steady_rate(starts: list[list[str]], finished: list[float], n: int, executing: int) -> tuple[float, float, str]:
    """Jobs per second from the moment every worker process had finished its first job to the last completion;
    also the start of that window and a note when it had to be chosen otherwise."""
    if not finished:
        raise RuntimeError("no completion time recorded")
    firsts: dict[str, tuple[float, int]] = {}
    for pid, when, count in starts:
        if pid not in firsts or float(when) < firsts[pid][0]:
            firsts[pid] = (float(when), int(count))
    ordered = sorted(firsts.values())
    note = f"only {len(ordered)} of {executing} processes ran a job" if len(ordered) < executing else ""
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
    """Worker, redis-server and PostgreSQL CPU per job over the samples taken once every process was busy."""
    first = next((s for s in samples if s[0] >= begin_at and s[1] < n), None)
    if first is None or first[1] > n * 0.8:
        first = next((s for s in samples if s[1] > 0), samples[0])
    last = samples[-1]
    jobs = last[1] - first[1]
    if jobs <= 0:
        return {}
    out = {"cpu": (last[2] - first[2]) * 1000 / jobs, "rcpu": (last[3] - first[3]) * 1e6 / jobs}
    if not math.isnan(last[4] - first[4]):
        out["pgcpu"] = (last[4] - first[4]) * 1e6 / jobs
    return out


ROWS: list[tuple[str, str, str, str]] = [  # key, label, format, the peers' key for the ratio ("": the same)
    ("enqueue", "submit: one call per job, jobs/s", ",.0f", ""),
    ("enqueue-bulk", "submit: bulk (batches of {batch}), jobs/s", ",.0f", ""),
    ("noop", "no-op jobs, 2-process configuration, jobs/s", ",.0f", ""),
    ("pool", "no-op, ours --processes 2 --concurrency 8, jobs/s", ",.0f", "noop"),
    ("iso", "no-op, a process per job, 1 process (1 slot), jobs/s", ",.1f", ""),
    ("iso-default", "no-op, a process per job, ours with no flags, jobs/s", ",.1f", "iso"),
    ("io", "50 ms sleep jobs, {io} at once, jobs/s", ",.0f", ""),
    ("lat-p50", "latency submit -> handler start p50, ms", ".2f", ""),
    ("lat-p95", "latency p95, ms", ".2f", ""),
    ("lat-p99", "latency p99, ms", ".2f", ""),
    ("lat-lost", "latency samples not started within 2 s", ".0f", ""),
    ("submit-p50", "submit call alone p50, ms", ".2f", ""),
    ("procs-rest", "worker processes (latency configuration)", ".0f", ""),
    ("rss-rest", "worker RSS at rest, all processes, MB", ",.0f", ""),
    ("rss-rest-per", "worker RSS at rest per process, MB", ",.0f", ""),
    ("cmd-enqueue", "Redis commands per submit (one by one)", ".1f", ""),
    ("xact-enqueue", "SQL transactions per submit (one by one)", ".2f", ""),
    ("commands-noop", "Redis commands per job, no-op", ".1f", ""),
    ("reads-noop", "Redis reads per job (~round trips), no-op", ".1f", ""),
    ("transactions-noop", "SQL transactions per job, no-op", ".2f", ""),
    ("cpu-noop", "worker CPU per job, no-op, ms", ".2f", ""),
    ("rcpu-noop", "redis-server CPU per job, no-op, us", ",.0f", ""),
    ("pgcpu-noop", "PostgreSQL CPU per job, no-op, us", ",.0f", ""),
    ("commands-pool", "Redis commands per job, ours --processes 2 --concurrency 8", ".1f", "commands-noop"),
    ("transactions-pool", "SQL transactions per job, ours --processes 2 --concurrency 8", ".2f", "transactions-noop"),
    ("cpu-pool", "worker CPU per job, ours --processes 2 --concurrency 8, ms", ".2f", "cpu-noop"),
    ("commands-iso", "Redis commands per job, a process per job", ".1f", ""),
    ("cpu-iso", "worker CPU per job with its process, ms", ".2f", ""),
    ("pgcpu-iso", "PostgreSQL CPU per job, a process per job, us", ",.0f", ""),
]


def summarize(bench: Any, values: dict[tuple[str, str], list[float]], report: Report) -> None:
    a = bench.args
    systems = list(a.systems)
    peers = [s for s in systems if s != "ours"]
    ours_in = "ours" in systems

    def value(key: str, system: str) -> float | None:
        return median(values.get((key, system), []))

    header = [f"metric (median of {a.repeat})", *systems] + ([f"ours/{p}" for p in peers] if ours_in else [])
    rows = []
    for key, label, spec, peer_key in ROWS:
        got = {s: value(key, s) for s in systems}
        if all(v is None for v in got.values()):
            continue
        cells = [label.format(batch=a.batch, io=a.io_concurrency)] + [fmt(got[s], spec) for s in systems]
        if ours_in:
            cells += [fmt(ratio(got["ours"], value(peer_key or key, p)), ".2f") for p in peers]
        rows.append(cells)
    report.line()
    report.table(header, rows)
    report.line()
    report.line("Ratios ours/peer: above 1 is better for rates, below 1 for latency, memory, commands and CPU. Rows")
    report.line("of a single ours configuration compare with the peers' row named in bench/peers.py (ROWS).")
    report.line()
    report.line("Worker configurations:")
    for key in ("noop", "pool", "iso", "iso-default", "io", "latency"):
        described = [f"{s}: `{bench.notes[(key, s)]}`" for s in systems if (key, s) in bench.notes]
        if described:
            report.line(f"- {key}: " + "; ".join(described))
    if ours_in:
        pairs = [
            ("noop", "noop", "celery", "ours `jobs_worker` (no flags) / Celery prefork -c 2"),
            ("pool", "noop", "celery", f"ours --processes 2 --concurrency 8 / Celery -c 2 (was {PREVIOUS_POOL_RATIO})"),
            ("noop", "noop", "django-rq", "ours (no flags) / the django-rq baseline, rqworker-pool -n 2"),
            ("iso", "iso", "rq", "ours isolated, 1 process 1 slot / rq's forking Worker"),
            ("iso-default", "iso", "rq", "ours isolated, no flags / rq's forking Worker"),
        ]
        shown = [pair for pair in pairs if pair[2] in systems]
        if shown:
            report.line()
            report.line("The issue's comparisons (medians of this run):")
        for ours_key, peer_key, peer, label in shown:
            report.line(f"- {label}: {fmt(ratio(value(ours_key, 'ours'), value(peer_key, peer)), '.2f')}")
    for key in ("noop", "iso"):
        if not any(k[0].startswith(f"by:{key}:") for k in values):
            continue
        report.line()
        report.line(f"Redis commands per job, {key} (marker commands taken out):")
        for system in systems:
            by = {
                k[0].split(":", 2)[2]: median(v) or 0.0
                for k, v in values.items()
                if k[1] == system and k[0].startswith(f"by:{key}:")
            }
            if by:
                shown = ", ".join(f"{c} {n:.2f}" for c, n in sorted(by.items(), key=lambda kv: -kv[1]) if n >= 0.05)
                report.line(f"- {system}: {sum(by.values()):.1f} ({shown})")
