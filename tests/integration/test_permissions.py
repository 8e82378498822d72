"""DESIGN.md "Permissions": the jobs app's model permissions decide, the same on every surface; is_staff alone
grants nothing (a staff user without the permission is a plain user), owners always see and steer their own jobs."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from jobs.consumers import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND
from jobs.job_json import job_json
from jobs.models import JobEvent, JobLog, JobSchedule, JobStatus
from jobs.transport.queues import paused_queues
from tests.asgi import application
from tests.factories import make_job, make_user
from tests.integration.admin_support import grant
from tests.integration.api_support import JOBS_URL, job_url, state, token_client
from tests.integration.test_live_progress import session_headers

pytestmark = pytest.mark.django_db(transaction=True)

SCHEDULES_URL = "/api/schedules/"
TRACEBACK = "Traceback (most recent call last): secret"


@pytest.fixture
def plain_staff(transactional_db: None) -> Any:
    return make_user("plain-staff", is_staff=True)


@pytest.fixture
def viewer(transactional_db: None) -> Any:
    return grant(make_user("viewer", is_staff=True), "view_joblog")


@pytest.fixture
def changer(transactional_db: None) -> Any:
    return grant(make_user("changer", is_staff=True), "change_joblog")


@pytest.fixture
def failed_job(alice: Any) -> JobLog:
    job = make_job(
        owner=alice, status=JobStatus.FAILED, error_type="KeyError", error_message="'x'", traceback=TRACEBACK
    )
    JobEvent.objects.create(job=job, kind="failed", attempt=1, data={"error_type": "KeyError", "traceback": TRACEBACK})
    return job


# --------------------------------------------------------------------------------------------------------------
# Jobs


def test_jobs__staff_without_the_permission_is_a_plain_user(redis_url, alice, plain_staff, failed_job):
    client = token_client(plain_staff)
    own = make_job(owner=plain_staff, status=JobStatus.FAILED, error_type="E", error_message="m", traceback=TRACEBACK)
    before = state()

    assert [job["id"] for job in client.get(JOBS_URL).json()["results"]] == [str(own.pk)]
    for method, url in [
        ("get", job_url(failed_job)),
        ("get", job_url(failed_job, "events")),
        ("post", job_url(failed_job, "cancel")),
        ("post", job_url(failed_job, "retry")),
    ]:
        assert getattr(client, method)(url).status_code == 404, url
    assert state() == before
    assert client.get(job_url(own)).json()["error"] == {"type": "E", "message": "m"}, "no traceback, even own"
    assert client.post(job_url(own, "retry")).status_code == 202, "owners steer their own jobs"


@pytest.mark.parametrize("is_staff", [True, False])
def test_jobs__view_joblog_sees_every_job_and_traceback_but_may_not_steer(redis_url, alice, failed_job, is_staff):
    viewer = grant(make_user("viewer", is_staff=is_staff), "view_joblog")
    client = token_client(viewer)
    before = state()

    assert str(failed_job.pk) in [job["id"] for job in client.get(JOBS_URL).json()["results"]]
    assert client.get(job_url(failed_job)).json()["error"]["traceback"] == TRACEBACK
    assert client.get(job_url(failed_job, "events")).json()["results"][0]["data"]["traceback"] == TRACEBACK
    for action in ("cancel", "retry"):
        refused = client.post(job_url(failed_job, action))
        assert refused.status_code == 403 and "change_joblog" in refused.json()["detail"], action
    assert state() == before


def test_jobs__change_joblog_cancels_and_retries_other_users_jobs(redis_url, alice, changer, failed_job):
    client = token_client(changer)
    waiting = make_job(owner=alice, status=JobStatus.QUEUED)

    assert client.get(job_url(failed_job)).json()["error"]["traceback"] == TRACEBACK, "change includes view"
    assert client.post(job_url(failed_job, "retry")).status_code == 202
    assert client.post(job_url(waiting, "cancel")).status_code == 202
    assert JobLog.objects.get(pk=waiting.pk).status == JobStatus.CANCELED


def test_job_json__traceback_follows_the_permission_not_is_staff(redis_url, alice, plain_staff, viewer, failed_job):
    assert "traceback" not in job_json(failed_job, plain_staff, sensitive=())["error"]  # type: ignore[index]
    assert "traceback" not in job_json(failed_job, alice, sensitive=())["error"]  # type: ignore[index]
    assert job_json(failed_job, viewer, sensitive=())["error"]["traceback"] == TRACEBACK  # type: ignore[index]


# --------------------------------------------------------------------------------------------------------------
# Queues and health


def test_queues__plain_staff_403_viewer_reads_changer_operates(redis_url, plain_staff, viewer, changer):
    for path in ("/api/queues/", "/api/queues/echo/pause/"):
        method = "get" if path.endswith("queues/") else "post"
        assert getattr(token_client(plain_staff), method)(path).status_code == 403, path

    assert token_client(viewer).get("/api/queues/").status_code == 200
    for action in ("pause", "resume", "requeue-failed"):
        refused = token_client(viewer).post(f"/api/queues/echo/{action}/")
        assert refused.status_code == 403 and "change_joblog" in refused.json()["detail"], action
    assert "echo" not in paused_queues()

    assert token_client(changer).get("/api/queues/").status_code == 200
    assert token_client(changer).post("/api/queues/echo/pause/").status_code == 200
    assert "echo" in paused_queues()
    assert token_client(changer).post("/api/queues/echo/resume/").status_code == 200


def test_health__details_follow_view_joblog(redis_url, plain_staff, viewer):
    assert token_client(plain_staff).get("/api/health/").json() == {"status": "degraded"}
    details = token_client(viewer).get("/api/health/").json()
    assert details["status"] == "degraded" and details["redis"] is True and details["workers"] == 0


# --------------------------------------------------------------------------------------------------------------
# Schedules


def body(name: str = "nightly") -> dict[str, Any]:
    return {"name": name, "type": "greet", "payload": {"name": "Ada"}, "kind": "cron", "cron": "0 3 * * *"}


def schedule_user(*codenames: str) -> Any:
    return grant(make_user("-".join(codenames) or "none", is_staff=True), *codenames)


def test_schedules__plain_staff_may_do_nothing(redis_url, plain_staff, admin):
    existing = token_client(admin).post(SCHEDULES_URL, body(), format="json").json()
    client = token_client(plain_staff)
    before = state()

    assert client.get(SCHEDULES_URL).status_code == 403
    assert client.get(f"{SCHEDULES_URL}{existing['id']}/").status_code == 403
    assert client.post(SCHEDULES_URL, body("other"), format="json").status_code == 403
    assert client.patch(f"{SCHEDULES_URL}{existing['id']}/", {"enabled": False}, format="json").status_code == 403
    assert client.post(f"{SCHEDULES_URL}{existing['id']}/run/").status_code == 403
    assert client.delete(f"{SCHEDULES_URL}{existing['id']}/").status_code == 403
    assert state() == before


def test_schedules__each_action_needs_its_own_permission(redis_url, admin):
    existing = token_client(admin).post(SCHEDULES_URL, body(), format="json").json()
    one = f"{SCHEDULES_URL}{existing['id']}/"

    view = token_client(schedule_user("view_jobschedule"))
    assert view.get(SCHEDULES_URL).json()["results"][0]["id"] == existing["id"]
    assert view.get(one).status_code == 200
    before = state()
    refused = view.post(SCHEDULES_URL, body("other"), format="json")
    assert refused.status_code == 403 and "add_jobschedule" in refused.json()["detail"]
    assert view.patch(one, {"enabled": False}, format="json").status_code == 403
    assert view.put(one, body(), format="json").status_code == 403
    assert view.post(f"{one}run/").status_code == 403
    assert view.delete(one).status_code == 403
    assert state() == before and JobSchedule.objects.get(pk=existing["id"]).enabled is True

    add = token_client(schedule_user("add_jobschedule"))
    assert add.get(SCHEDULES_URL).status_code == 403, "adding does not include reading"
    assert add.post(SCHEDULES_URL, body("added"), format="json").status_code == 201

    change = token_client(schedule_user("change_jobschedule"))
    assert change.get(one).status_code == 200, "change includes view, as in the admin"
    assert change.patch(one, {"enabled": False}, format="json").status_code == 200
    assert change.post(f"{one}run/").status_code == 202
    assert change.delete(one).status_code == 403
    assert change.post(SCHEDULES_URL, body("again"), format="json").status_code == 403

    delete = token_client(schedule_user("delete_jobschedule"))
    assert delete.get(one).status_code == 403
    assert delete.delete(one).status_code == 204
    assert not JobSchedule.objects.filter(pk=existing["id"]).exists()
    assert JobSchedule.objects.filter(name="added").exists()


# --------------------------------------------------------------------------------------------------------------
# Websockets


def ws_close_code(path: str, user: Any) -> int | None:
    """Connect as ``user``: the close code, or None when the socket got its first frame and stayed open."""

    headers = session_headers(user)

    async def scenario() -> int | None:
        communicator = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        output = await communicator.receive_output(timeout=5)
        await communicator.disconnect()
        return int(output["code"]) if output["type"] == "websocket.close" else None

    return async_to_sync(scenario)()


def test_sockets__the_permission_decides_not_is_staff(redis_url, alice, plain_staff, failed_job):
    non_staff_viewer = grant(make_user("auditor"), "view_joblog")
    staff_viewer = grant(make_user("staff-viewer", is_staff=True), "view_joblog")

    assert ws_close_code(f"/ws/jobs/{failed_job.pk}/", plain_staff) == CLOSE_NOT_FOUND
    assert ws_close_code("/ws/dashboard/", plain_staff) == CLOSE_FORBIDDEN
    assert ws_close_code(f"/ws/jobs/{failed_job.pk}/", staff_viewer) is None
    # Consistent with the REST API, where the permission alone shows every job: no is_staff needed.
    assert ws_close_code("/ws/dashboard/", non_staff_viewer) is None
    assert ws_close_code(f"/ws/jobs/{failed_job.pk}/", non_staff_viewer) is None
