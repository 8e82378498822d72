"""The publisher thread against a real Redis: a lone frame goes out at once, a burst waits for the gap and goes
out as one batch, and flush() cuts the gap short."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from redis import Redis

from jobs.live import publish as progress
from jobs.live.layer import JobsChannelLayer
from tests.conftest import wait_for


def status(job_id: str) -> dict[str, Any]:
    return {"type": "status", "job_id": job_id, "status": "queued"}


@pytest.fixture
def dashboard(redis_url: str) -> Any:
    """A subscriber on the dashboard group's channel; yields a function returning the job ids received so far."""
    layer = JobsChannelLayer()
    pubsub = Redis.from_url(redis_url).pubsub()
    pubsub.subscribe(layer.group_channel("dashboard"))
    confirmation = pubsub.get_message(timeout=10)
    assert confirmation is not None and confirmation["type"] == "subscribe"
    received: list[str] = []

    def job_ids() -> list[str]:
        while (message := pubsub.get_message(timeout=0.01)) is not None:
            assert message["type"] == "message"
            received.append(json.loads(layer.deserialize(message["data"])["text"])["job_id"])
        return received

    yield job_ids
    pubsub.close()


def test_publisher__a_burst_waits_for_the_gap_and_flush_cuts_it_short(redis_url, dashboard, monkeypatch):
    monkeypatch.setattr(progress, "PUBLISH_MIN_GAP", 60.0)  # far longer than this test may take
    publisher = progress.Publisher(JobsChannelLayer())
    sends: list[int] = []
    send = publisher._send
    monkeypatch.setattr(publisher, "_send", lambda batch: (sends.append(len(batch)), send(batch)))

    # Nothing was sent before: the first frame goes at once, not a minute later.
    publisher.put(status("first"), ["dashboard"])
    wait_for(lambda: dashboard() == ["first"], timeout=10, what="the lone frame")

    # Within the gap: frames pile up, however slowly they come; the flush sends them as one batch, in order,
    # without waiting out the gap.
    burst = [f"job-{i}" for i in range(100)]
    for job_id in burst:
        publisher.put(status(job_id), ["job." + job_id, "dashboard"])
        time.sleep(0.001)  # time enough for the thread to wake and send, were it not waiting for the gap
    started = time.monotonic()
    assert publisher.flush(timeout=30)
    assert time.monotonic() - started < 30
    wait_for(lambda: len(dashboard()) == 101, timeout=10, what="the burst")
    assert dashboard() == ["first", *burst]
    assert sends == [1, 100]


def test_publisher__after_the_gap_a_frame_goes_without_a_flush(redis_url, dashboard, monkeypatch):
    monkeypatch.setattr(progress, "PUBLISH_MIN_GAP", 0.2)
    publisher = progress.Publisher(JobsChannelLayer())
    publisher.put(status("a"), ["dashboard"])
    publisher.put(status("b"), ["dashboard"])  # may wait out the gap behind "a"; nobody flushes
    wait_for(lambda: dashboard() == ["a", "b"], timeout=10, what="both frames")


def test_publisher__sends_on_the_jobs_redis_client(redis_url, dashboard):
    from jobs.transport.connections import get_connection

    publisher = progress.Publisher(JobsChannelLayer())
    publisher.put(status("shared"), ["dashboard"])
    wait_for(lambda: dashboard() == ["shared"], timeout=10, what="the frame")
    # The client rq and the engine use: a process opens its connections in one pool, not one pool each.
    assert publisher._redis is get_connection()
