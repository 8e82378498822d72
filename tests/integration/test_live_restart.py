"""Live progress outlives a Redis restart: a real ASGI server (uvicorn) keeps running while its Redis restarts.

New dashboard sockets connect afterwards, and the sockets open before the restart hear frames again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.authtoken.models import Token
from websockets.sync.client import ClientConnection, connect

from jobs.live.publish import flush_published, publish_status
from tests.conftest import ROOT, database_url, free_port
from tests.factories import make_job, make_user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


OUTAGE_SECONDS = 2.0


class WebServer:
    def __init__(self, redis_url: str) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url(),
            "REDIS_URL": redis_url,
            "PYTHONPATH": str(ROOT),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--lifespan",
                "off",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/schema/", timeout=2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn did not start: {self.output()}") from None
                time.sleep(0.1)

    def socket(self, path: str, token: str) -> ClientConnection:
        return connect(
            f"ws://127.0.0.1:{self.port}{path}",
            additional_headers={"Authorization": f"Token {token}", "Origin": f"http://127.0.0.1:{self.port}"},
            open_timeout=10,
        )

    def output(self) -> str:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        assert self.proc.stdout is not None
        return self.proc.stdout.read().decode(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def web(own_redis: Any) -> Iterator[WebServer]:
    server = WebServer(own_redis.url)
    yield server
    server.stop()


def heard_status(socket: ClientConnection, job: Any, timeout: float = 20) -> bool:
    """Publish the job's status every half second until ``socket`` hears a status frame of it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publish_status(job)
        flush_published()
        until = time.monotonic() + 0.5
        while (left := until - time.monotonic()) > 0:
            try:
                frame = json.loads(socket.recv(timeout=left))
            except TimeoutError:
                break
            if frame["type"] == "status" and frame["job_id"] == str(job.id):
                return True
    return False


def test_dashboard_socket__connects_after_a_redis_restart_that_happened_while_no_socket_was_open(own_redis, web):
    # The layer's subscriber connection sits idle when nobody listens: nothing notices that it died, and the next
    # socket's SUBSCRIBE goes out on it.
    operator = make_user("operator", is_staff=True, is_superuser=True)
    token = Token.objects.create(user=operator).key
    job = make_job(owner=operator)
    with web.socket("/ws/dashboard/", token) as first:
        assert heard_status(first, job)
    time.sleep(0.5)  # its subscriptions are dropped: the layer is idle

    own_redis.stop()
    time.sleep(OUTAGE_SECONDS)
    own_redis.start()

    with web.socket("/ws/dashboard/", token) as after:
        assert heard_status(after, job), web.output()


def test_dashboard_sockets__new_ones_connect_and_open_ones_hear_frames_after_a_redis_restart(own_redis, web):
    operator = make_user("operator", is_staff=True, is_superuser=True)
    token = Token.objects.create(user=operator).key
    job = make_job(owner=operator)

    with web.socket("/ws/dashboard/", token) as before:
        assert heard_status(before, job)

        own_redis.stop()
        time.sleep(OUTAGE_SECONDS)  # long enough for redis-py's own few quick retries to give up
        own_redis.start()  # same port, no data: every connection the server held is gone

        with web.socket("/ws/dashboard/", token) as after:
            assert heard_status(after, job), web.output()
        assert heard_status(before, job), web.output()
