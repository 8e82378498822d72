"""The submitting side of bench.peers, run in one system's virtual environment; prints one JSON line.

    python -m bench.peer_tasks.driver SYSTEM enqueue --kind noop --n 5000      # single submissions, timed
    python -m bench.peer_tasks.driver SYSTEM bulk --n 20000 --batch 500        # bulk submission, timed
    python -m bench.peer_tasks.driver SYSTEM fill --kind noop --n 10000        # load a queue, fastest way there is
    python -m bench.peer_tasks.driver SYSTEM latency --samples 300             # submit -> handler start, one by one

SYSTEM is ours, django-rq (the baseline in bench/naive/), rq, celery or dramatiq. KIND is noop, sleep, ping or
isolated (ours: a type declared isolation="process"; the others their no-op task, which their forking workers
isolate). Needs BENCH_REDIS_URL (and for ours DJANGO_SETTINGS_MODULE, DATABASE_URL, REDIS_URL; for django-rq
DATABASE_URL).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from typing import Any

SLEEP_SECONDS = 0.05


def args_for(kind: str, total: int, seq: int) -> tuple[Any, ...]:
    if kind in ("noop", "isolated"):
        return (total,)
    if kind == "sleep":
        return (total, SLEEP_SECONDS)
    return (seq,)


class System:
    """send() submits one job the way a user of the system would; send_many() is its bulk path, if it has one."""

    name = ""
    has_bulk = False

    def send(self, kind: str, total: int, seq: int) -> None:
        raise NotImplementedError

    def send_many(self, kind: str, total: int, count: int) -> None:
        raise NotImplementedError


class Ours(System):
    name = "ours"

    def __init__(self) -> None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
        import django

        django.setup()
        from jobs import services

        self.submit = services.submit
        self.submit_many = services.submit_many
        self.has_bulk = True

    @staticmethod
    def payload(kind: str, total: int, seq: int) -> dict[str, Any]:
        if kind == "ping":
            return {"seq": seq}
        if kind == "sleep":
            return {"total": total, "seconds": SLEEP_SECONDS}
        return {"total": total}

    @staticmethod
    def type_name(kind: str) -> str:
        return "bench-isolated-noop" if kind == "isolated" else f"bench-{kind}"

    def send(self, kind: str, total: int, seq: int) -> None:
        self.submit(self.type_name(kind), self.payload(kind, total, seq))

    def send_many(self, kind: str, total: int, count: int) -> None:
        self.submit_many(self.type_name(kind), [self.payload(kind, total, i) for i in range(count)])


class Rq(System):
    name = "rq"
    has_bulk = True

    def __init__(self) -> None:
        from redis import Redis
        from rq import Queue

        from bench.peer_tasks import rq_tasks

        self.Queue = Queue
        self.queue = Queue("bench", connection=Redis.from_url(os.environ["BENCH_REDIS_URL"]))
        self.funcs = {"noop": rq_tasks.noop, "isolated": rq_tasks.noop, "sleep": rq_tasks.sleep, "ping": rq_tasks.ping}

    def send(self, kind: str, total: int, seq: int) -> None:
        self.queue.enqueue(self.funcs[kind], *args_for(kind, total, seq))

    def send_many(self, kind: str, total: int, count: int) -> None:
        func, args = self.funcs[kind], args_for(kind, total, 0)
        self.queue.enqueue_many([self.Queue.prepare_data(func, args) for _ in range(count)])


class DjangoRqBaseline(System):
    """django-rq with a TaskLog row per task (bench/naive/): what a team writes without our app."""

    name = "django-rq"
    has_bulk = True

    def __init__(self) -> None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.naive.settings")
        import django

        django.setup()
        from bench.naive import tasks

        self.tasks = tasks

    def send(self, kind: str, total: int, seq: int) -> None:
        kind = "noop" if kind == "isolated" else kind
        self.tasks.submit(kind, list(args_for(kind, total, seq)))

    def send_many(self, kind: str, total: int, count: int) -> None:
        kind = "noop" if kind == "isolated" else kind
        self.tasks.submit_many(kind, [list(args_for(kind, total, 0)) for _ in range(count)])


class CeleryTasks(System):
    name = "celery"

    def __init__(self) -> None:
        from bench.peer_tasks import celery_tasks

        self.tasks = {"noop": celery_tasks.noop, "sleep": celery_tasks.sleep, "ping": celery_tasks.ping}

    def send(self, kind: str, total: int, seq: int) -> None:
        self.tasks[kind].delay(*args_for(kind, total, seq))


class DramatiqActors(System):
    name = "dramatiq"

    def __init__(self) -> None:
        from bench.peer_tasks import dramatiq_tasks

        self.actors = {"noop": dramatiq_tasks.noop, "sleep": dramatiq_tasks.sleep, "ping": dramatiq_tasks.ping}

    def send(self, kind: str, total: int, seq: int) -> None:
        self.actors[kind].send(*args_for(kind, total, seq))


SYSTEMS: dict[str, type[System]] = {
    "ours": Ours,
    "django-rq": DjangoRqBaseline,
    "rq": Rq,
    "celery": CeleryTasks,
    "dramatiq": DramatiqActors,
}


def timed_singles(system: System, kind: str, n: int, total: int, warmup: int) -> dict[str, Any]:
    for i in range(warmup):
        system.send(kind, total, i)
    started = time.perf_counter()
    for i in range(n):
        system.send(kind, total, i)
    return {"seconds": time.perf_counter() - started, "n": n}


def timed_bulk(system: System, kind: str, n: int, total: int, batch: int) -> dict[str, Any]:
    if not system.has_bulk:
        return {"unsupported": True}
    system.send_many(kind, total, min(batch, 10))  # warm-up: imports, connections
    started = time.perf_counter()
    left = n
    while left > 0:
        count = min(batch, left)
        system.send_many(kind, total, count)
        left -= count
    return {"seconds": time.perf_counter() - started, "n": n, "warmup": min(batch, 10)}


def fill(system: System, kind: str, n: int, total: int, batch: int) -> dict[str, Any]:
    """Put n of a run's ``total`` jobs on the queue (bench.peers runs two of these side by side)."""
    started = time.perf_counter()
    if system.has_bulk:
        left = n
        while left > 0:
            count = min(batch, left)
            system.send_many(kind, total, count)
            left -= count
    else:
        for i in range(n):
            system.send(kind, total, i)
    return {"seconds": time.perf_counter() - started, "n": n, "bulk": system.has_bulk}


def latency(system: System, samples: int, warmup: int, first_timeout: float, timeout: float) -> dict[str, Any]:
    """Submit one ping at a time and wait for its handler to start; the worker is idle before each one.

    Latency = the handler's time.time() at its first line minus time.time() just before the submit call. Between
    samples the driver waits a random 10-50 ms, so the worker has finished the previous job and sits idle, and
    polling workers are not caught in phase with their poll interval. A ping whose handler has not started within
    ``timeout`` seconds is counted as lost and the next one is sent (a late start of it is ignored). Warm-up pings
    go on until one has started (the first may wait ``first_timeout`` for the worker to come up).
    """
    from redis import Redis

    from bench.peer_tasks.marker import LATENCY

    conn = Redis.from_url(os.environ["BENCH_REDIS_URL"], socket_timeout=None)
    rng = random.Random(1)
    latencies: list[float] = []
    submit_calls: list[float] = []
    lost = warm_lost = 0
    seq = warm_ok = 0
    while warm_ok < warmup or len(latencies) + lost < samples:
        warming = warm_ok < warmup
        if warming and warm_lost > 5:
            return {"error": f"no warm-up ping started (last: {seq - 1})", "latencies": latencies}
        t0 = time.time()
        system.send("ping", 0, seq)
        t1 = time.time()
        started = wait_for_start(conn, LATENCY, seq, first_timeout if seq == 0 else timeout)
        if warming:
            warm_ok += started is not None
            warm_lost += started is None
        elif started is None:
            lost += 1
        else:
            latencies.append(started - t0)
            submit_calls.append(t1 - t0)
        seq += 1
        time.sleep(rng.uniform(0.01, 0.05))
    return {"latencies": latencies, "submit_calls": submit_calls, "lost": lost, "timeout": timeout}


def wait_for_start(conn: Any, key: str, seq: int, timeout: float) -> float | None:
    """The start time the handler of ping ``seq`` reported, or None if it did not start within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        item = conn.blpop([key], timeout=min(1.0, max(0.01, left)))
        if item is None:
            continue
        got_seq, started = item[1].decode().split()
        if int(got_seq) == seq:
            return float(started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("action", choices=["enqueue", "bulk", "fill", "latency"])
    parser.add_argument("--kind", choices=["noop", "isolated", "sleep", "ping"], default="noop")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--total", type=int, default=0, help="jobs in the whole run (fill), when more than --n")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--first-timeout", type=float, default=120.0)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    system = SYSTEMS[args.system]()
    if args.action == "enqueue":
        out = timed_singles(system, args.kind, args.n, args.n, args.warmup)
    elif args.action == "bulk":
        out = timed_bulk(system, args.kind, args.n, args.n, args.batch)
    elif args.action == "fill":
        out = fill(system, args.kind, args.n, args.total or args.n, args.batch)
    else:
        out = latency(system, args.samples, args.warmup, args.first_timeout, args.timeout)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
