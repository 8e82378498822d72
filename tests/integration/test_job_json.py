"""One job JSON: the API, the websocket snapshot and the admin's live data agree for the same job and viewer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from rest_framework import serializers

from jobs.job_json import moment, status_frame
from jobs.models import JobLog, JobSchedule, JobStatus
from tests.asgi import application
from tests.factories import make_job, make_user
from tests.integration.api_support import JOB_KEYS, job_url, session_client

pytestmark = pytest.mark.django_db(transaction=True)

STARTED = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TRACEBACK = 'Traceback (most recent call last):\n  File "import.py", line 9\nValueError: row 17 has no phone'


def busy_job(owner: Any) -> JobLog:
    """A failed job with every part of the JSON filled in."""
    schedule = JobSchedule.objects.create(name="nightly", job_type="echo", kind="interval", interval_seconds=60)
    return make_job(
        owner=owner,
        schedule=schedule,
        status=JobStatus.FAILED,
        priority="high",
        attempts=3,
        progress_percent=40,
        progress_message="Importing rows",
        progress_stage="import",
        progress_data={"current": 4, "total": 10},
        failed_items=[{"item": "row 17", "error": "no phone"}],
        failed_items_count=1,
        error_type="ValueError",
        error_message="row 17 has no phone",
        traceback=TRACEBACK,
        enqueued_at=STARTED - timedelta(seconds=1),
        started_at=STARTED,
        finished_at=STARTED + timedelta(seconds=2, microseconds=5),
    )


def snapshot(user: Any, job: JobLog) -> dict[str, Any]:
    client = Client()
    client.force_login(user)
    headers = [
        (b"origin", b"http://testserver"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]

    async def receive() -> dict[str, Any]:
        communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        frame = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return dict(frame)

    frame = async_to_sync(receive)()
    assert frame["type"] == "snapshot"
    return dict(frame["job"])


def admin_data(user: Any, job: JobLog) -> tuple[int, Any]:
    client = Client()
    client.force_login(user)
    response = client.get(reverse("admin:jobs_joblog_data", args=[job.pk]))
    return response.status_code, response.json() if response.status_code == 200 else None


def api_answer(user: Any, job: JobLog) -> dict[str, Any]:
    client = session_client(user)
    detail = client.get(job_url(job))
    assert detail.status_code == 200
    listed = client.get("/api/jobs/").json()["results"]
    # A list leaves the columns this viewer may not see in the database; the job reads the same either way.
    assert listed == [detail.json()]
    return dict(detail.json())


def with_absolute_urls(job: dict[str, Any]) -> dict[str, Any]:
    """The websocket's paths as the API writes them, for a plain-HTTP request to testserver."""
    return {**job, "status_url": f"http://testserver{job['status_url']}", "ws_url": f"ws://testserver{job['ws_url']}"}


def test_job_json__staff_see_the_same_job_with_its_traceback_everywhere(redis_url, alice):
    job = busy_job(alice)
    staff = make_user("root", is_staff=True, is_superuser=True)

    api, ws = api_answer(staff, job), snapshot(staff, job)
    status, admin = admin_data(staff, job)

    assert status == 200
    assert list(admin) == list(ws) == list(api) and set(api) == JOB_KEYS
    assert admin == ws, "the admin polls what the websocket would have sent"
    assert api == with_absolute_urls(ws)
    assert api["error"] == {"type": "ValueError", "message": "row 17 has no phone", "traceback": TRACEBACK}
    assert api["progress"] == {
        "percent": 40,
        "message": "Importing rows",
        "stage": "import",
        "data": {"current": 4, "total": 10},
    }
    assert (api["owner"], api["schedule"], api["priority"]) == (alice.pk, job.schedule_id, "high")
    assert api["started_at"] == "2024-03-01T12:00:00.123456Z" and api["finished_at"] == "2024-03-01T12:00:02.123461Z"


def test_job_json__the_owner_sees_the_same_job_without_the_traceback(redis_url, alice):
    job = busy_job(alice)

    api, ws = api_answer(alice, job), snapshot(alice, job)

    assert list(ws) == list(api) and set(api) == JOB_KEYS
    assert api == with_absolute_urls(ws)
    assert api["error"] == {"type": "ValueError", "message": "row 17 has no phone"}
    # The admin is for staff: an owner follows the job through the API and the websockets.
    assert admin_data(alice, job)[0] == 302

    staff_view = snapshot(make_user("root", is_staff=True, is_superuser=True), job)
    assert {**staff_view, "error": api["error"]} == ws, "only the traceback differs between the two viewers"


def test_job_json__the_status_frame_carries_the_error_everyone_may_see(redis_url, alice):
    job = JobLog.objects.get(pk=busy_job(alice).pk)

    frame = status_frame(job)
    owner_view = snapshot(alice, job)

    assert frame["type"] == "status" and frame["job_id"] == owner_view["id"]
    assert (frame["status"], frame["attempts"], frame["result"]) == ("failed", 3, None)
    assert frame["error"] == owner_view["error"], "frames go to every listener: never a traceback"


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/St_Johns"])
@pytest.mark.parametrize("value", [STARTED, STARTED.replace(microsecond=0), datetime(2024, 7, 1, 23, 30, tzinfo=UTC)])
def test_moment__writes_a_time_as_drf_does(settings, zone, value):
    settings.TIME_ZONE = zone
    assert moment(value) == serializers.DateTimeField().to_representation(value)


def sign_in_job(owner: Any) -> JobLog:
    return make_job(
        owner=owner,
        job_type="sign-in",
        queue="sign-in",
        payload={"username": "alice", "password": "hunter2", "api_key": "k-123"},
    )


def test_job_json__the_owner_sees_the_payload_they_submitted(redis_url, alice):
    job = make_job(owner=alice, payload={"name": "Ada", "times": 2, "nested": {"password": "kept: not top-level"}})

    api, ws = api_answer(alice, job), snapshot(alice, job)

    assert api["payload"] == ws["payload"] == {"name": "Ada", "times": 2, "nested": {"password": "kept: not top-level"}}


def test_job_json__another_users_job_and_its_payload_are_a_404(redis_url, alice, bob):
    job = sign_in_job(alice)

    client = session_client(bob)

    assert client.get(job_url(job)).status_code == 404
    assert client.get("/api/jobs/").json()["results"] == []


def test_job_json__sensitive_keys_are_masked_for_the_owner_without_view_joblog(redis_url, alice):
    job = sign_in_job(alice)

    api, ws = api_answer(alice, job), snapshot(alice, job)

    assert api["payload"] == ws["payload"] == {"username": "alice", "password": "***", "api_key": "***"}
    assert JobLog.objects.get(pk=job.pk).payload["password"] == "hunter2", "masked in the answer, not in SQL"


def test_job_json__sensitive_keys_are_shown_to_users_with_view_joblog(redis_url, alice):
    job = sign_in_job(alice)
    viewer = make_user("auditor")
    viewer.user_permissions.add(Permission.objects.get(codename="view_joblog", content_type__app_label="jobs"))

    api, ws = api_answer(viewer, job), snapshot(viewer, job)
    status, admin = admin_data(make_user("root", is_staff=True, is_superuser=True), job)

    expected = {"username": "alice", "password": "hunter2", "api_key": "k-123"}
    assert api["payload"] == ws["payload"] == expected
    assert status == 200 and admin["payload"] == expected


def test_job_json__submitting_answers_with_the_masked_payload(redis_url, alice, django_capture_on_commit_callbacks):
    client = session_client(alice)

    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(
            "/api/jobs/", {"type": "sign-in", "payload": {"username": "alice", "password": "hunter2"}}, format="json"
        )

    assert answer.status_code == 202
    assert answer.json()["payload"] == {"username": "alice", "password": "***"}
