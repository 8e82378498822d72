"""End to end over real HTTP: a live server, a token, and a jobs_worker subprocess doing the work."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.cache import cache
from rest_framework.authtoken.models import Token

from tests.factories import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


class Http:
    """A tiny JSON client over one keep-alive connection: what a script with a token would use."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
        started = time.perf_counter()
        self.conn.request(method, path, body=None if body is None else json.dumps(body), headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - started
        return response.status, json.loads(data) if data else None, elapsed

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def api(live_server, redis_url):
    cache.clear()
    token = Token.objects.create(user=make_user("alice"))
    client = Http(live_server.url, token.key)
    yield client
    client.close()


def follow(api: Http, job_id: str, until: set[str], timeout: float = 30) -> list[dict[str, Any]]:
    """Poll GET jobs/{id}/ until the status is in ``until``; every distinct snapshot seen, in order."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        status, job, _ = api.request("GET", f"/api/jobs/{job_id}/")
        assert status == 200
        snapshot = {k: job[k] for k in ("status", "attempts", "progress", "error", "result")}
        if not seen or snapshot != seen[-1]:
            seen.append(snapshot)
        if job["status"] in until:
            return seen
        assert time.monotonic() < deadline, f"still {job['status']} after {timeout}s: {seen}"
        time.sleep(0.02)


def test_flow__submit_watch_progress_and_result(api, workers, capsys):
    status, job, elapsed = api.request("POST", "/api/jobs/", {"type": "cooperative", "payload": {"steps": 40}})
    assert status == 202 and job["id"] and job["status"] == "queued"
    # Information only, never asserted: the first request pays for connections and lazy imports, and Django's
    # test server writes headers and body separately, so Nagle and delayed ACKs add about 40 ms to each answer.
    # bench/api_latency.py measures behind gunicorn instead.
    warm = sorted(api.request("POST", "/api/jobs/", {"type": "echo", "payload": {"n": i}})[2] for i in range(9))
    with capsys.disabled():
        print(
            f"\nPOST /api/jobs/ over loopback HTTP: first {elapsed * 1000:.1f} ms, "
            f"then median {warm[4] * 1000:.1f} ms, max {warm[-1] * 1000:.1f} ms of 9 (information, not asserted)"
        )
    # No worker yet: the job waits in its queue.
    assert api.request("GET", f"/api/jobs/{job['id']}/")[1]["status"] == "queued"

    workers.start()
    seen = follow(api, job["id"], until={"succeeded", "failed"})

    statuses = [s["status"] for s in seen]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded"
    assert [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]] == ["queued", "running", "succeeded"]
    running = [s["progress"] for s in seen if s["status"] == "running"]
    assert any(0 < p["percent"] < 100 and p["stage"] == "work" for p in running), running
    percents = [p["percent"] for p in running]
    assert percents == sorted(percents)  # progress only goes forward
    assert seen[-1]["result"] == {"steps": 40} and seen[-1]["error"] is None and seen[-1]["attempts"] == 1


def test_flow__failing_job_retries_then_fails_with_the_error(api, workers):
    workers.start()
    status, job, _ = api.request("POST", "/api/jobs/", {"type": "flaky", "payload": {"succeed_on": 99}})
    assert status == 202

    seen = follow(api, job["id"], until={"succeeded", "failed"})

    final = seen[-1]
    assert final["status"] == "failed" and final["attempts"] == 3
    assert final["error"] == {"type": "ConnectionError", "message": "attempt 3 failed"}  # no traceback: not staff
    attempts = [s["attempts"] for s in seen]
    assert attempts == sorted(attempts)
    # Between attempts the job waits out its backoff as "scheduled", carrying the last error.
    waiting = [s for s in seen if s["status"] == "scheduled"]
    assert {s["attempts"] for s in waiting} == {1, 2}, seen
    assert all(s["error"]["type"] == "ConnectionError" for s in waiting)

    _, events, _ = api.request("GET", f"/api/jobs/{job['id']}/events/")
    kinds = [e["kind"] for e in events["results"]]
    assert kinds.count("started") == 3 and kinds.count("retry_scheduled") == 2 and kinds[-1] == "failed"
