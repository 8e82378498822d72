"""Open websockets are checked again while they stay open, and counted per user across ASGI processes.

Real parts: two uvicorn servers in their own processes (tests.asgi on the test database and Redis), real websocket
clients (the websockets library), sessions and tokens made and deleted here as a user logging out would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
from django.db import connections
from django.test import Client
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from jobs import services
from jobs.consumers import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_TOO_MANY, CLOSE_UNAUTHENTICATED
from jobs.transport import sockets
from tests.conftest import ROOT, database_url, free_port, kill_process_groups
from tests.factories import make_user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RECHECK = 0.5
CAP = 3


class Servers:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self) -> int:
        """An ASGI server process (uvicorn) serving tests.asgi; returns its port once it answers."""
        port = free_port()
        fd, name = tempfile.mkstemp(prefix="jobs-asgi-", suffix=".log")
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url(),
            "REDIS_URL": self.redis_url,
            "PYTHONPATH": str(ROOT),
            "JOBS_TEST_SOCKET_RECHECK_INTERVAL": str(RECHECK),
            "JOBS_TEST_MAX_SOCKETS_PER_USER": str(CAP),
        }
        with os.fdopen(fd, "wb") as out:
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", "tests.asgi:application", "--port", str(port), "--no-access-log"],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        self.logs.append(Path(name))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                import urllib.request

                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/", timeout=1)  # noqa: S310
                return port
            except OSError as exc:
                if getattr(exc, "code", None):  # an HTTP status (503 without workers): it answers
                    return port
                time.sleep(0.2)
        raise AssertionError("the ASGI server did not start:\n" + self.logs[-1].read_text(errors="replace"))

    def stop_all(self) -> None:
        kill_process_groups(self.procs, self.logs)


@pytest.fixture
def servers(redis_url: str) -> Iterator[Servers]:
    started = Servers(redis_url)
    yield started
    started.stop_all()


def session_cookie(user: Any) -> tuple[str, str]:
    client = Client()
    client.force_login(user)
    key = client.cookies["sessionid"].value
    return key, f"sessionid={key}"


async def open_socket(port: int, path: str, header: tuple[str, str]) -> ClientConnection:
    return await connect(f"ws://127.0.0.1:{port}{path}", origin="http://testserver", additional_headers=[header])


async def close_code_within(ws: ClientConnection, seconds: float) -> int | None:
    """Read frames until the server closes the socket: its close code, or None if it stayed open that long."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                await ws.recv()
    except TimeoutError:
        return None
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def in_thread(call: Any, *args: Any) -> Any:
    """``call(*args)`` in a worker thread that closes its database connection after: left open, it would block
    dropping the PostgreSQL test database at the end of the run."""

    def closing() -> Any:
        try:
            return call(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(closing)


def test_socket__logout_closes_it_4401_within_the_recheck_interval(redis_url, servers):
    port = servers.start()
    alice = make_user("alice")
    job = services.submit("echo", {}, user=alice)
    key, cookie = session_cookie(alice)
    token = Token.objects.create(user=alice)

    async def scenario() -> dict[str, Any]:
        by_session = await open_socket(port, f"/ws/jobs/{job.pk}/", ("Cookie", cookie))
        by_token = await open_socket(port, "/ws/jobs/", ("Authorization", f"Token {token.key}"))
        first = await by_session.recv()
        still_open = await close_code_within(by_session, RECHECK * 3)
        await in_thread(Session.objects.filter(session_key=key).delete)  # what logout does
        started = time.monotonic()
        after_logout = await close_code_within(by_session, RECHECK * 4)
        took = time.monotonic() - started
        token_open = await close_code_within(by_token, 0.1)
        await in_thread(Token.objects.filter(user=alice).delete)
        after_token = await close_code_within(by_token, RECHECK * 4)
        return {
            "first": first,
            "open": still_open,
            "logout": after_logout,
            "took": took,
            "token": (token_open, after_token),
        }

    result = run(scenario())
    assert '"snapshot"' in result["first"] and result["open"] is None, "a signed-in socket stays open past rechecks"
    assert result["logout"] == CLOSE_UNAUTHENTICATED and result["took"] < RECHECK * 3
    assert result["token"] == (None, CLOSE_UNAUTHENTICATED)


def test_socket__permission_removed_closes_it(redis_url, servers):
    port = servers.start()
    alice = make_user("alice")
    job = services.submit("echo", {}, user=alice)
    auditor = make_user("auditor", is_staff=True)
    view = Permission.objects.get(codename="view_joblog")
    auditor.user_permissions.add(view)
    _, cookie = session_cookie(auditor)

    async def scenario() -> tuple[Any, ...]:
        dashboard = await open_socket(port, "/ws/dashboard/", ("Cookie", cookie))
        someone_elses = await open_socket(port, f"/ws/jobs/{job.pk}/", ("Cookie", cookie))
        first = (await dashboard.recv(), await someone_elses.recv())
        before = await close_code_within(dashboard, RECHECK * 2)
        await in_thread(auditor.user_permissions.remove, view)
        return (
            first,
            before,
            await close_code_within(dashboard, RECHECK * 4),
            await close_code_within(someone_elses, RECHECK * 4),
        )

    first, before, dashboard_code, job_code = run(scenario())
    assert '"queues"' in first[0] and '"snapshot"' in first[1] and before is None
    assert (dashboard_code, job_code) == (CLOSE_FORBIDDEN, CLOSE_NOT_FOUND)


def test_socket__cap_per_user_across_processes_4429_then_a_closed_one_frees_a_slot(redis_url, servers):
    ports = [servers.start(), servers.start()]
    alice, bob = make_user("alice"), make_user("bob")
    _, alice_cookie = session_cookie(alice)
    _, bob_cookie = session_cookie(bob)

    async def scenario() -> dict[str, Any]:
        # CAP sockets spread over two server processes: the count is in Redis, not in either process.
        held = [await open_socket(ports[i % 2], "/ws/jobs/", ("Cookie", alice_cookie)) for i in range(CAP)]
        opened = [await close_code_within(ws, 0.2) for ws in held]
        counted = await asyncio.to_thread(sockets.count_sockets, alice.pk)
        one_too_many = await open_socket(ports[0], "/ws/jobs/", ("Cookie", alice_cookie))
        refused = await close_code_within(one_too_many, 5)
        bobs = await open_socket(ports[1], "/ws/jobs/", ("Cookie", bob_cookie))
        bob_open = await close_code_within(bobs, 0.3)
        await held[0].close()
        await asyncio.sleep(0.3)
        again = await open_socket(ports[1], "/ws/jobs/", ("Cookie", alice_cookie))
        accepted = await close_code_within(again, RECHECK * 3)
        for ws in [*held[1:], again, bobs]:
            await ws.close()
        return {"opened": opened, "counted": counted, "refused": refused, "bob": bob_open, "again": accepted}

    result = run(scenario())
    assert result["opened"] == [None] * CAP and result["counted"] == CAP
    assert result["refused"] == CLOSE_TOO_MANY
    assert result["bob"] is None, "the cap is per user"
    assert result["again"] is None, "a closed socket frees its slot"


def test_socket__a_killed_server_leaks_no_slots(redis_url, servers):
    port = servers.start()
    alice = make_user("alice")
    _, cookie = session_cookie(alice)

    async def scenario() -> dict[str, Any]:
        held = [await open_socket(port, "/ws/jobs/", ("Cookie", cookie)) for _ in range(CAP)]
        opened = [await close_code_within(ws, 0.2) for ws in held]
        counted = await asyncio.to_thread(sockets.count_sockets, alice.pk)
        os.killpg(servers.procs[0].pid, signal.SIGKILL)  # no disconnect handler runs
        for ws in held:
            await close_code_within(ws, 5)  # the client sees the connection drop
            await ws.close()
        deadline = time.monotonic() + RECHECK * 10
        while await asyncio.to_thread(sockets.count_sockets, alice.pk) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        left = await asyncio.to_thread(sockets.count_sockets, alice.pk)
        other = await asyncio.to_thread(servers.start)
        again = await open_socket(other, "/ws/jobs/", ("Cookie", cookie))
        accepted = await close_code_within(again, RECHECK * 2)
        await again.close()
        return {"opened": opened, "counted": counted, "left": left, "again": accepted}

    result = run(scenario())
    assert result["opened"] == [None] * CAP and result["counted"] == CAP
    assert result["left"] == 0, "entries expire a few rechecks after their server died"
    assert result["again"] is None
