"""Live progress end to end: a real worker subprocess publishes, a websocket client on the ASGI app receives.

The channel layer is channels-redis pub/sub on the test's own redis-server; the consumers run in this process
through Channels' WebsocketCommunicator, the worker in another process, so frames really cross Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.authtoken.models import Token

from jobs import services
from jobs.consumers import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from jobs.models import JobLog, JobStatus
from tests.asgi import application
from tests.conftest import wait_for
from tests.factories import make_user

pytestmark = pytest.mark.slow

ORIGIN = (b"origin", b"http://testserver")
TERMINAL = {"succeeded", "failed", "canceled"}


def session_headers(user: Any) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    return [ORIGIN, (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]


def token_headers(user: Any) -> list[tuple[bytes, bytes]]:
    token, _ = Token.objects.get_or_create(user=user)
    return [ORIGIN, (b"authorization", f"Token {token.key}".encode())]


def run(coro: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    async def main() -> Any:
        return await coro(*args)

    return async_to_sync(main)()


async def close_code(path: str, headers: list[tuple[bytes, bytes]]) -> int | None:
    """Connect and return the close code the server answers with (None if it kept the socket open)."""
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected, "refusals are sent after accepting, so the client sees the code"
    try:
        output = await communicator.receive_output(timeout=5)
    except TimeoutError:
        output = {"type": "nothing"}
    if output["type"] != "websocket.close":
        await communicator.disconnect()
        return None
    return int(output["code"])


async def frames_until_terminal(communicator: WebsocketCommunicator, timeout: float = 30) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await communicator.receive_json_from(timeout=max(0.1, deadline - loop.time()))
        frames.append(frame)
        if frame["type"] == "status" and frame["status"] in TERMINAL:
            return frames


@pytest.mark.parametrize("type_name", ["stages", "isolated-stages"])  # in its worker process, or in a child of it
def test_job_socket__snapshot_then_ordered_progress_then_final_status(type_name, redis_url, workers, alice):
    job = services.submit(type_name, {"steps": 3, "pause": 0.15}, user=alice)
    assert JobLog.objects.get(pk=job.pk).status == JobStatus.QUEUED

    headers = session_headers(alice)

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.id}/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        snapshot = await communicator.receive_json_from(timeout=5)
        workers.start("--queues", type_name)
        frames = await frames_until_terminal(communicator)
        await communicator.disconnect()
        return snapshot, frames

    snapshot, frames = run(scenario)

    assert snapshot["type"] == "snapshot"
    assert snapshot["job"]["id"] == str(job.id) and snapshot["job"]["status"] == "queued"
    assert snapshot["job"]["ws_url"] == f"/ws/jobs/{job.id}/"
    assert all(frame["job_id"] == str(job.id) for frame in frames)
    statuses = [frame["status"] for frame in frames if frame["type"] == "status"]
    assert statuses == ["running", "succeeded"]
    assert frames[0] == {**frames[0], "type": "status", "status": "running", "attempts": 1}
    progress = [frame for frame in frames if frame["type"] == "progress"]
    # Each step is slower than the publish interval, so every one of the 9 steps arrives, in order.
    assert [frame["data"]["step"] for frame in progress] == list(range(1, 10))
    assert [frame["stage"] for frame in progress] == ["fetch"] * 3 + ["parse"] * 3 + ["write"] * 3
    assert [frame["percent"] for frame in progress] == sorted(frame["percent"] for frame in progress)
    assert progress[-1]["percent"] == 100 and progress[-1]["message"] == "write 3/3"
    final = frames[-1]
    assert final["result"] == {"stages": ["fetch", "parse", "write"], "steps": 9} and final["error"] is None
    assert frames.index(progress[-1]) < frames.index(final), "the last progress arrives before the final status"


def test_job_socket__tight_progress_loop_is_coalesced_but_final_state_arrives(redis_url, workers, alice):
    calls = 10_000
    job = services.submit("chatty", {"calls": calls}, user=alice)

    headers = token_headers(alice)

    async def scenario() -> list[dict[str, Any]]:
        communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.id}/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        assert (await communicator.receive_json_from(timeout=5))["type"] == "snapshot"
        workers.start("--queues", "chatty")
        frames = await frames_until_terminal(communicator)
        await communicator.disconnect()
        return frames

    frames = run(scenario)
    progress = [frame for frame in frames if frame["type"] == "progress"]
    assert 1 <= len(progress) < 100, f"{len(progress)} progress frames for {calls} calls"
    assert progress[-1]["percent"] == 100 and progress[-1]["data"]["current"] == calls
    assert frames[-1]["status"] == "succeeded" and frames[-1]["result"] == calls
    row = JobLog.objects.get(pk=job.pk)
    assert row.progress_percent == 100 and row.progress_data["current"] == calls


def test_user_socket__receives_own_jobs_only(redis_url, workers, alice, bob):
    mine = services.submit("echo", {"n": 1}, user=alice)
    theirs = services.submit("echo", {"n": 2}, user=bob)

    headers = session_headers(alice)

    async def scenario() -> list[dict[str, Any]]:
        communicator = WebsocketCommunicator(application, "/ws/jobs/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        await asyncio.sleep(0.2)  # subscribed before the worker starts
        workers.start("--queues", "echo")
        frames = await frames_until_terminal(communicator)
        await asyncio.sleep(0.5)  # room for a frame that must not come
        assert await communicator.receive_nothing(timeout=0.2)
        await communicator.disconnect()
        return frames

    frames = run(scenario)
    assert {frame["job_id"] for frame in frames} == {str(mine.id)}
    wait_for(lambda: JobLog.objects.get(pk=theirs.pk).status == JobStatus.SUCCEEDED)


def test_dashboard_socket__staff_get_queue_counts_and_every_job(redis_url, workers, alice):
    job = services.submit("echo", {"n": 1}, user=alice)
    operator = make_user("operator", is_staff=True)
    operator.user_permissions.add(Permission.objects.get(codename="view_joblog"))
    headers = session_headers(operator)

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        communicator = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        counts = await communicator.receive_json_from(timeout=5)
        workers.start("--queues", "echo")
        frames = [frame for frame in await frames_until_terminal(communicator) if frame["type"] != "queues"]
        await communicator.disconnect()
        return counts, frames

    counts, frames = run(scenario)
    assert counts["type"] == "queues"
    echo = next(queue for queue in counts["queues"] if queue["name"] == "echo")
    assert echo["counts"]["queued"] == 1
    assert [frame["status"] for frame in frames if frame["type"] == "status"] == ["running", "succeeded"]
    assert {frame["job_id"] for frame in frames} == {str(job.id)}


def test_refusals__close_codes_match_the_contract(redis_url, alice, bob, admin):
    job = services.submit("echo", {"n": 1}, user=alice)
    anonymous = [ORIGIN]
    alice_session, alice_token = session_headers(alice), token_headers(alice)
    bob_session, admin_session = session_headers(bob), session_headers(admin)
    plain_staff_session = session_headers(make_user("plain-staff", is_staff=True))
    bad_token = [ORIGIN, (b"authorization", b"Token nope")]

    async def scenario() -> dict[str, int | None]:
        return {
            "anonymous job": await close_code(f"/ws/jobs/{job.id}/", anonymous),
            "anonymous mine": await close_code("/ws/jobs/", anonymous),
            "anonymous dashboard": await close_code("/ws/dashboard/", anonymous),
            "other user's job": await close_code(f"/ws/jobs/{job.id}/", bob_session),
            "unknown job": await close_code(f"/ws/jobs/{job.id.hex[::-1]}/", alice_session),
            "malformed id": await close_code("/ws/jobs/not-a-uuid/", alice_session),
            "bad token": await close_code(f"/ws/jobs/{job.id}/", bad_token),
            "non-staff dashboard": await close_code("/ws/dashboard/", alice_token),
            "staff without the jobs permission, dashboard": await close_code("/ws/dashboard/", plain_staff_session),
            "staff without the jobs permission, other user's job": await close_code(
                f"/ws/jobs/{job.id}/", plain_staff_session
            ),
            "owner": await close_code(f"/ws/jobs/{job.id}/", alice_token),
            "staff": await close_code(f"/ws/jobs/{job.id}/", admin_session),
        }

    codes = run(scenario)
    assert codes == {
        "anonymous job": CLOSE_UNAUTHENTICATED,
        "anonymous mine": CLOSE_UNAUTHENTICATED,
        "anonymous dashboard": CLOSE_UNAUTHENTICATED,
        "other user's job": CLOSE_NOT_FOUND,
        "unknown job": CLOSE_NOT_FOUND,
        "malformed id": CLOSE_NOT_FOUND,
        "bad token": CLOSE_UNAUTHENTICATED,
        "non-staff dashboard": CLOSE_FORBIDDEN,
        "staff without the jobs permission, dashboard": CLOSE_FORBIDDEN,
        "staff without the jobs permission, other user's job": CLOSE_NOT_FOUND,
        "owner": None,
        "staff": None,
    }


def test_refusals__foreign_origin_is_refused_at_the_handshake(redis_url, alice):
    job = services.submit("echo", {"n": 1}, user=alice)

    headers = [(b"origin", b"http://evil.example"), *session_headers(alice)[1:]]

    async def scenario() -> bool:
        communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.id}/", headers=headers)
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return bool(connected)

    assert run(scenario) is False


def test_staff_snapshot_carries_the_traceback_owner_snapshot_does_not(redis_url, drain, alice, admin):
    job = services.submit("permanent", {}, user=alice)
    drain(lambda: JobLog.objects.get(pk=job.pk).status == JobStatus.FAILED)

    async def snapshot(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.id}/", headers=headers)
        await communicator.connect()
        frame = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return dict(frame["job"])

    viewer = make_user("ops", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_joblog"))
    owner_headers, staff_headers = session_headers(alice), session_headers(viewer)
    owner_view = run(snapshot, owner_headers)
    staff_view = run(snapshot, staff_headers)
    assert owner_view["status"] == staff_view["status"] == "failed"
    assert "traceback" not in owner_view["error"]
    assert "Traceback" in staff_view["error"]["traceback"]


def test_dashboard_socket__the_change_permission_is_enough_like_in_the_admin(redis_url, transactional_db):
    operator = make_user("changer", is_staff=True)
    operator.user_permissions.add(Permission.objects.get(codename="change_joblog"))
    headers = session_headers(operator)

    async def first_frame() -> dict[str, Any]:
        communicator = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        frame = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return dict(frame)

    assert run(first_frame)["type"] == "queues"
