"""Live progress delivery: a handler's progress call -> the frame at a websocket client, and fan-out capacity.

Starts its own stack: a private redis-server, SQLite in a temporary directory, and one uvicorn process serving
the benchmarks' ASGI app (bench/asgi.py: (Channels consumers, channels-redis pub/sub). This process plays the
worker: it calls JobContext.progress() like a handler does, so frames take the real path (publisher thread ->
Redis PUBLISH -> the web process -> the consumer -> the socket). Prints:

1. the handler's cost of one progress call in a tight loop (microseconds);
2. delivery latency p50/p95/p99 from the progress() call to the frame arriving at a websocket client;
3. frames per second one web process delivers to N connected clients (default 100) of the same user.

    python -m bench.progress_latency [--samples 300] [--clients 100] [--frames 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import Report, percentile


def start_stack(workdir: Path, procs: harness.Processes, report: Report) -> int:
    """Redis, the database and uvicorn serving bench.asgi; Django set up in this process. Returns the web port."""
    redis = harness.RedisServer(procs)
    env = harness.django_env("bench.settings", f"sqlite:///{workdir / 'bench.sqlite3'}", redis.url)
    harness.setup_django(env)
    report.facts_line(harness.machine_facts(redis=redis))
    port = harness.free_port()
    procs.start(
        "web",
        [sys.executable, "-m", "uvicorn", "bench.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
        + ["--lifespan", "off", "--no-access-log", "--log-level", "warning"],
        env,
    )

    def web_answers() -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/", timeout=2) as response:
                return response.status in (200, 503)
        except urllib.error.HTTPError as exc:  # a 503 still means the server is up
            return exc.code == 503

    harness.wait_until("uvicorn", web_answers)
    return port


def handler_cost(user: Any, calls: int) -> float:
    """Microseconds of handler time per progress() call in a tight loop, with the project's default intervals."""
    from jobs.live.context import JobContext
    from jobs.live.publish import flush_published
    from jobs.models import JobLog

    job = JobLog.objects.create(job_type="bench-chatty", queue="bench-api", owner=user, status="running")
    ctx = JobContext(job, 1)
    started = time.perf_counter()
    for i in range(calls):
        ctx.progress(100 * i // calls, f"item {i}", stage="loop", current=i, total=calls)
    elapsed = time.perf_counter() - started
    flush_published()
    return elapsed / calls * 1e6


async def _latency_client(
    url: str, headers: dict[str, str], origin: str, ready: threading.Event, arrivals: dict[int, float], expected: int
) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, additional_headers=headers, origin=origin) as socket:  # type: ignore[arg-type]
        snapshot = json.loads(await socket.recv())
        assert snapshot["type"] == "snapshot", snapshot
        ready.set()
        while len(arrivals) < expected:
            try:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
            except TimeoutError:
                return  # the rest were superseded by newer frames (the caller counts them)
            if frame["type"] == "progress":
                arrivals[frame["data"]["i"]] = time.perf_counter()


def delivery_latency(port: int, user: Any, token: str, samples: int) -> list[float]:
    """Milliseconds from progress() to the frame at a websocket client, one frame every 20 ms."""
    from django.conf import settings
    from django.test import override_settings

    from jobs.live.context import JobContext
    from jobs.models import JobLog

    # Every call publishes at once here (the default interval would hold back calls closer than 0.1 s). Through
    # override_settings: jobs_settings() is cached, and only the setting_changed signal refreshes it.
    override_settings(JOBS={**settings.JOBS, "PROGRESS_PUBLISH_INTERVAL": 0}).enable()
    job = JobLog.objects.create(job_type="bench-chatty", queue="bench-api", owner=user, status="running")
    ctx = JobContext(job, 1)
    arrivals: dict[int, float] = {}
    ready = threading.Event()
    origin = f"http://127.0.0.1:{port}"
    client = threading.Thread(
        target=lambda: asyncio.run(
            _latency_client(
                f"ws://127.0.0.1:{port}/ws/jobs/{job.id}/",
                {"Authorization": f"Token {token}"},
                origin,
                ready,
                arrivals,
                samples,
            )
        ),
        daemon=True,
    )
    client.start()
    if not ready.wait(10):
        raise RuntimeError("the websocket client did not connect")
    sent: dict[int, float] = {}
    for i in range(samples):
        sent[i] = time.perf_counter()
        ctx.progress(i % 100, f"sample {i}", data={"i": i})
        time.sleep(0.02)
    client.join(15)
    coalesced = samples - len(arrivals)
    if coalesced:
        # By design: a frame still waiting in the publisher when a newer one of the same job comes is dropped.
        harness.log(f"  {coalesced} of {samples} latency frames were superseded by a newer one before they went out")
    return [(arrivals[i] - sent[i]) * 1000 for i in arrivals]


def _fanout_client_process(url: str, token: str, origin: str, clients: int, frames: int, conn: Any) -> None:
    async def one(index: int, connected: asyncio.Event, counts: list[int], last: list[float]) -> None:
        from websockets.asyncio.client import connect

        async with connect(url, additional_headers={"Authorization": f"Token {token}"}, origin=origin) as socket:
            counts[index] = 0
            connected.set()
            while counts[index] < frames:
                try:
                    await asyncio.wait_for(socket.recv(), 20)
                except TimeoutError:
                    return
                counts[index] += 1
                last[index] = time.time()

    async def main() -> None:
        counts = [-1] * clients
        last = [0.0] * clients
        events = [asyncio.Event() for _ in range(clients)]
        tasks = [asyncio.ensure_future(one(i, events[i], counts, last)) for i in range(clients)]
        await asyncio.gather(*(event.wait() for event in events))
        await asyncio.sleep(0.5)  # every consumer has joined its group
        conn.send("ready")
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.send((sum(max(0, c) for c in counts), max(last)))

    asyncio.run(main())


def fanout(port: int, user: Any, token: str, clients: int, frames: int) -> tuple[float, int, float]:
    """(frames/s delivered in total, frames delivered, seconds) for ``frames`` frames to ``clients`` clients."""
    import uuid

    from django.utils import timezone

    from jobs.live.publish import flush_published, publish

    parent, child = multiprocessing.Pipe()
    origin = f"http://127.0.0.1:{port}"
    proc = multiprocessing.get_context("spawn").Process(
        target=_fanout_client_process,
        args=(f"ws://127.0.0.1:{port}/ws/jobs/", token, origin, clients, frames, child),
        daemon=True,
    )
    proc.start()
    if not parent.poll(60) or parent.recv() != "ready":
        raise RuntimeError("the fan-out clients did not connect")
    started = time.time()
    for i in range(frames):
        # Distinct jobs, so the publisher's per-job coalescing keeps every frame.
        frame = {
            "type": "progress",
            "job_id": str(uuid.uuid4()),
            "percent": i % 100,
            "message": f"frame {i}",
            "stage": "fanout",
            "data": {"i": i},
            "at": timezone.now().isoformat(),
        }
        publish(frame, user.pk)  # type: ignore[arg-type]
    flush_published(30)
    if not parent.poll(120):
        raise RuntimeError("the fan-out clients did not report")
    delivered, last = parent.recv()
    proc.join(10)
    elapsed = last - started
    return delivered / elapsed, delivered, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300, help="latency samples (one every 20 ms)")
    parser.add_argument("--calls", type=int, default=100_000, help="progress() calls for the handler-cost loop")
    parser.add_argument("--clients", type=int, default=100, help="websocket clients for the fan-out test")
    parser.add_argument("--frames", type=int, default=2000, help="frames published in the fan-out test")
    harness.add_arguments(parser)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="jobs-bench-progress-"))
    procs = harness.Processes(workdir)
    report = Report("progress_latency")
    try:
        port = start_stack(workdir, procs, report)
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        user = get_user_model().objects.create_user("bench")
        token = Token.objects.create(user=user).key

        cost = handler_cost(user, args.calls)
        latencies = delivery_latency(port, user, token, args.samples)
        rate, delivered, elapsed = fanout(port, user, token, args.clients, args.frames)
        expected = args.clients * args.frames
        report.line()
        report.table(
            ["figure", "value"],
            [
                ["handler cost of progress() in a tight loop", f"{cost:.2f} µs per call ({args.calls:,} calls)"],
                [
                    f"latency progress() -> websocket client, {len(latencies)} frames",
                    f"p50 {statistics.median(latencies):.2f} ms, p95 {percentile(latencies, 95):.2f} ms, "
                    f"p99 {percentile(latencies, 99):.2f} ms, max {max(latencies):.2f} ms",
                ],
                [
                    f"fan-out, {args.frames:,} frames to {args.clients} clients, one uvicorn process",
                    f"{delivered:,} of {expected:,} delivered in {elapsed:.2f} s = {rate:,.0f} frames/s",
                ],
            ],
        )
        report.save(not args.no_save)
    finally:
        procs.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
