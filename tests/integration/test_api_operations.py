"""REST API for operators and everyone around them: queues, schedules, health, auth, and the OpenAPI docs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from django.contrib.auth.models import Permission
from django.contrib.staticfiles import finders
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from jobs import scheduler
from jobs.models import JobLog, JobSchedule, JobStatus
from jobs.services import submit
from tests.conftest import wait_for
from tests.factories import make_job, make_user
from tests.integration.api_support import JOB_KEYS, JOBS_URL, session_client, state, token_client

pytestmark = pytest.mark.django_db(transaction=True)

SCHEDULES_URL = "/api/schedules/"


# --------------------------------------------------------------------------------------------------------------
# Auth


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", JOBS_URL),
        ("post", JOBS_URL),
        ("get", f"{JOBS_URL}2f1e9a4e-0000-4000-8000-000000000000/"),
        ("post", f"{JOBS_URL}2f1e9a4e-0000-4000-8000-000000000000/cancel/"),
        ("get", "/api/job-types/"),
        ("get", "/api/queues/"),
        ("post", "/api/queues/echo/pause/"),
        ("get", SCHEDULES_URL),
    ],
)
def test_auth__anonymous_gets_401(redis_url, method, path):
    before = state()
    response = getattr(APIClient(), method)(path, {"type": "echo"} if method == "post" else None, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["code"] == "not_authenticated"
    assert state() == before


def test_auth__bad_token_is_401(redis_url):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get(JOBS_URL).status_code == 401


def test_auth__session_post_needs_csrf_token(redis_url, alice):
    client = session_client(alice, enforce_csrf=True)
    before = state()

    refused = client.post(JOBS_URL, {"type": "echo"}, format="json")

    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert state() == before
    client.cookies["csrftoken"] = token = "a" * 32
    accepted = client.post(JOBS_URL, {"type": "echo"}, format="json", headers={"X-CSRFToken": token})
    assert accepted.status_code == 202


def test_auth__token_post_needs_no_csrf(redis_url, alice):
    client = token_client(alice)
    client.enforce_csrf_checks = True
    assert client.post(JOBS_URL, {"type": "echo"}, format="json").status_code == 202


# --------------------------------------------------------------------------------------------------------------
# Queues


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/queues/"),
        ("post", "/api/queues/echo/pause/"),
        ("post", "/api/queues/echo/resume/"),
        ("post", "/api/queues/echo/requeue-failed/"),
    ],
)
def test_queues__staff_only(redis_url, alice, method, path):
    response = getattr(token_client(alice), method)(path)
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"


def test_queues__stats(redis_url, admin):
    submit("echo", {}, user=admin)
    make_job(status=JobStatus.FAILED)
    response = token_client(admin).get("/api/queues/")
    assert response.status_code == 200
    echo = next(q for q in response.json() if q["name"] == "echo")
    assert {"name", "job_types", "paused", "counts", "workers", "throughput"} <= set(echo)
    assert echo["job_types"] == ["echo"] and echo["paused"] is False
    assert echo["counts"] == {
        "pending": 0,
        "queued": 1,
        "scheduled": 0,
        "running": 0,
        "succeeded": 0,
        "failed": 1,
        "canceled": 0,
    }
    assert echo["workers"] == [] and echo["throughput"] == {"last_minute": 0, "last_hour": 0}


def test_queues__pause_and_resume_honoured_by_a_worker_and_shown_in_stats(redis_url, admin, drain):
    client = token_client(admin)
    paused = client.post("/api/queues/echo/pause/")
    assert paused.status_code == 200 and paused.json() == {"name": "echo", "paused": True}
    held = client.post(JOBS_URL, {"type": "echo"}, format="json").json()
    other = client.post(JOBS_URL, {"type": "greet", "payload": {"name": "Ada"}}, format="json").json()

    drain(lambda: JobLog.objects.get(pk=other["id"]).status == JobStatus.SUCCEEDED)

    assert JobLog.objects.get(pk=held["id"]).status == JobStatus.QUEUED
    assert next(q for q in client.get("/api/queues/").json() if q["name"] == "echo")["paused"] is True
    resumed = client.post("/api/queues/echo/resume/")
    assert resumed.status_code == 200 and resumed.json() == {"name": "echo", "paused": False}
    drain(lambda: JobLog.objects.get(pk=held["id"]).status == JobStatus.SUCCEEDED)
    assert next(q for q in client.get("/api/queues/").json() if q["name"] == "echo")["paused"] is False


def test_queues__requeue_failed(redis_url, admin, drain):
    client = token_client(admin)
    failed = [client.post(JOBS_URL, {"type": "permanent"}, format="json").json()["id"] for _ in range(2)]
    drain(lambda: all(JobLog.objects.get(pk=i).status == JobStatus.FAILED for i in failed))

    response = client.post("/api/queues/permanent/requeue-failed/")

    assert response.status_code == 200 and response.json() == {"name": "permanent", "requeued": 2}
    assert set(JobLog.objects.filter(pk__in=failed).values_list("status", flat=True)) == {JobStatus.QUEUED}


@pytest.mark.parametrize("action", ["pause", "resume", "requeue-failed"])
def test_queues__unknown_queue_is_404(redis_url, admin, action):
    response = token_client(admin).post(f"/api/queues/no-such-queue/{action}/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


# --------------------------------------------------------------------------------------------------------------
# Health


def test_health__degraded_without_workers_details_for_staff_only(redis_url, alice, admin):
    anonymous = APIClient().get("/api/health/")
    assert anonymous.status_code == 503 and anonymous.json() == {"status": "degraded"}
    assert token_client(alice).get("/api/health/").json() == {"status": "degraded"}
    staff = token_client(admin).get("/api/health/")
    assert staff.status_code == 503
    assert staff.json()["database"] is True and staff.json()["redis"] is True and staff.json()["workers"] == 0


def test_health__ok_with_a_worker(workers, admin):
    workers.start()
    wait_for(lambda: APIClient().get("/api/health/").status_code == 200, what="a healthy report")
    assert APIClient().get("/api/health/").json() == {"status": "ok"}
    details = token_client(admin).get("/api/health/").json()
    assert details["status"] == "ok" and details["workers"] == 1 and details["queue_depth"] == 0


# --------------------------------------------------------------------------------------------------------------
# Schedules


def schedule_body(**overrides):
    return {"name": "nightly", "type": "greet", "payload": {"name": "Ada"}, "kind": "cron", "cron": "0 3 * * *"} | (
        overrides
    )


def test_schedules__staff_only(redis_url, alice):
    client = token_client(alice)
    assert client.get(SCHEDULES_URL).status_code == 403
    assert client.post(SCHEDULES_URL, schedule_body(), format="json").status_code == 403
    assert JobSchedule.objects.count() == 0


def test_schedules__create_cron_with_next_run_in_its_time_zone(redis_url, admin):
    before = timezone.now()
    response = token_client(admin).post(
        SCHEDULES_URL, schedule_body(timezone="Europe/Paris", payload={"name": "Ada", "times": "2"}), format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == {
        "id",
        "name",
        "type",
        "payload",
        "kind",
        "cron",
        "interval_seconds",
        "run_at",
        "timezone",
        "enabled",
        "priority",
        "overlap",
        "next_run_at",
        "last_run_at",
        "last_job",
    }
    assert body["type"] == "greet" and body["payload"] == {"name": "Ada", "times": 2}
    assert body["priority"] == "normal" and body["overlap"] == "skip" and body["enabled"] is True
    expected = croniter("0 3 * * *", before.astimezone(ZoneInfo("Europe/Paris"))).get_next(datetime)
    assert parse_datetime(body["next_run_at"]) == expected
    assert parse_datetime(body["next_run_at"]).astimezone(ZoneInfo("Europe/Paris")).hour == 3
    assert body["last_run_at"] is None and body["last_job"] is None
    assert JobSchedule.objects.get(pk=body["id"]).owner == admin


def test_schedules__interval_and_once(redis_url, admin):
    client = token_client(admin)
    before = timezone.now()
    interval = client.post(
        SCHEDULES_URL, schedule_body(name="every-minute", kind="interval", interval_seconds=60), format="json"
    ).json()
    assert interval["cron"] == "" and interval["interval_seconds"] == 60
    assert timedelta(seconds=59) < parse_datetime(interval["next_run_at"]) - before < timedelta(seconds=62)

    at = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    once = client.post(SCHEDULES_URL, schedule_body(name="once", kind="once", run_at=at.isoformat()), format="json")
    assert once.status_code == 201 and parse_datetime(once.json()["next_run_at"]) == at
    assert once.json()["cron"] == "" and once.json()["interval_seconds"] is None


def test_schedules__list_retrieve_update_delete(redis_url, admin):
    client = token_client(admin)
    created = client.post(SCHEDULES_URL, schedule_body(), format="json").json()
    client.post(SCHEDULES_URL, schedule_body(name="another"), format="json")
    url = f"{SCHEDULES_URL}{created['id']}/"

    listed = client.get(SCHEDULES_URL).json()
    assert [s["name"] for s in listed["results"]] == ["another", "nightly"]
    assert client.get(url).json() == created

    # Switching kind clears the other kind's fields and recomputes the next run.
    patched = client.patch(url, {"kind": "interval", "interval_seconds": 5}, format="json")
    assert patched.status_code == 200, patched.json()
    assert patched.json()["cron"] == "" and patched.json()["interval_seconds"] == 5
    disabled = client.patch(url, {"enabled": False}, format="json").json()
    assert disabled["enabled"] is False and disabled["next_run_at"] is None
    replaced = client.put(url, schedule_body(name="renamed", cron="*/5 * * * *", enabled=True), format="json")
    assert replaced.status_code == 200 and replaced.json()["cron"] == "*/5 * * * *"
    assert replaced.json()["next_run_at"] is not None

    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404 and client.get(url).json()["code"] == "not_found"
    assert client.get(f"{SCHEDULES_URL}not-a-number/").status_code == 404


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cron": "not cron"}, "cron"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "0 0 * * * *"}, "cron"),  # six fields: seconds are not supported
        ({"cron": "0 0 31 2 *"}, "cron"),  # valid syntax, never fires
        ({"cron": ""}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../etc/passwd"}, "timezone"),
        ({"kind": "interval", "interval_seconds": 0}, "interval_seconds"),
        ({"kind": "interval"}, "interval_seconds"),
        ({"kind": "once"}, "run_at"),
        ({"kind": "weekly"}, "kind"),
        ({"type": "no-such-type"}, "type"),
        ({"payload": {"times": 9}}, "payload"),
        ({"payload": ["not", "an", "object"]}, "payload"),
        ({"priority": "urgent"}, "priority"),
        ({"overlap": "sometimes"}, "overlap"),
        ({"name": ""}, "name"),
    ],
)
def test_schedules__invalid_is_400_with_the_field(redis_url, admin, overrides, field):
    before = state()
    response = token_client(admin).post(SCHEDULES_URL, schedule_body(**overrides), format="json")
    assert response.status_code == 400 and field in response.json(), response.json()
    assert state() == before


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"kind": "interval", "interval_seconds": 1e12}, "interval_seconds"),
        ({"kind": "interval", "interval_seconds": 10**30}, "interval_seconds"),
        ({"kind": "interval", "interval_seconds": 2**31}, "interval_seconds"),
        ({"kind": "interval", "interval_seconds": 1.5}, "interval_seconds"),
        ({"kind": "once", "run_at": "9999-12-31T23:59:59Z"}, "run_at"),
        ({"kind": "once", "run_at": "9999-12-31T23:59:59-12:00"}, "run_at"),
        ({"kind": "once", "run_at": "0001-01-01T00:00:00+14:00"}, "run_at"),
        ({"kind": "once", "run_at": "0001-01-01T00:00:00Z", "timezone": "America/New_York"}, "run_at"),
        ({"cron": "*/99999999999999999999 * * * *"}, "cron"),
        ({"cron": "0-99999999999 * * * *"}, "cron"),
        ({"cron": "0 0 1 1 *", "timezone": "Etc/GMT-14"}, None),  # a valid edge: accepted
    ],
)
def test_schedules__numbers_and_dates_out_of_range_are_400_not_500(redis_url, admin, overrides, field):
    before = state()
    response = token_client(admin).post(SCHEDULES_URL, schedule_body(**overrides), format="json")
    if field is None:
        assert response.status_code == 201, response.json()
        return
    assert response.status_code == 400 and field in response.json(), response.json()
    assert all(isinstance(message, str) and message for message in response.json()[field]), response.json()
    assert state() == before


def test_schedules__huge_interval_on_update_is_400_and_changes_nothing(redis_url, admin):
    client = token_client(admin)
    created = client.post(SCHEDULES_URL, schedule_body(kind="interval", interval_seconds=60), format="json").json()
    before = state()
    response = client.patch(f"{SCHEDULES_URL}{created['id']}/", {"interval_seconds": 1e12}, format="json")
    assert response.status_code == 400 and "interval_seconds" in response.json()
    assert state() == before and JobSchedule.objects.get().interval_seconds == 60


def test_schedules__payload_field_errors_and_duplicate_name(redis_url, admin):
    client = token_client(admin)
    bad = client.post(SCHEDULES_URL, schedule_body(payload={"times": 9}), format="json").json()
    assert set(bad["payload"]) == {"name", "times"}
    client.post(SCHEDULES_URL, schedule_body(), format="json")
    duplicate = client.post(SCHEDULES_URL, schedule_body(), format="json")
    assert duplicate.status_code == 400 and "name" in duplicate.json()


def test_schedules__renaming_keeps_the_next_run(redis_url, admin):
    client = token_client(admin)
    created = client.post(SCHEDULES_URL, schedule_body(kind="interval", interval_seconds=3600), format="json").json()
    renamed = client.patch(f"{SCHEDULES_URL}{created['id']}/", {"name": "hourly"}, format="json").json()
    assert renamed["name"] == "hourly" and renamed["next_run_at"] == created["next_run_at"]


def test_schedules__created_through_the_api_are_run_by_the_scheduler(redis_url, admin):
    created = (
        token_client(admin)
        .post(SCHEDULES_URL, schedule_body(kind="interval", interval_seconds=60), format="json")
        .json()
    )

    (job,) = scheduler.tick(now=parse_datetime(created["next_run_at"]) + timedelta(seconds=1))

    assert job.schedule_id == created["id"] and job.owner == admin and job.payload == {"name": "Ada", "times": 1}


def test_schedules__run_now_submits_as_the_owner(redis_url, admin):
    client = token_client(admin)
    schedule = client.post(SCHEDULES_URL, schedule_body(priority="high"), format="json").json()

    response = client.post(f"{SCHEDULES_URL}{schedule['id']}/run/")

    assert response.status_code == 202
    job = response.json()
    assert job["type"] == "greet" and job["priority"] == "high" and job["status"] == "queued"
    assert job["schedule"] == schedule["id"] and job["owner"] == admin.pk
    assert JobLog.objects.get(pk=job["id"]).payload == {"name": "Ada", "times": 1}
    after = client.get(f"{SCHEDULES_URL}{schedule['id']}/").json()
    assert after["last_job"] == job["id"] and parse_datetime(after["last_run_at"]) is not None


def test_schedules__the_last_editor_owns_it_and_its_runs_are_theirs(redis_url, admin):
    editor = make_user("editor", is_staff=True)
    editor.user_permissions.add(*Permission.objects.filter(codename__in=["view_jobschedule", "change_jobschedule"]))
    body = schedule_body(kind="interval", interval_seconds=60, overlap="allow")
    created = token_client(admin).post(SCHEDULES_URL, body, format="json")
    url = f"{SCHEDULES_URL}{created.json()['id']}/"
    mine = JobSchedule.objects.filter(pk=created.json()["id"])

    assert token_client(editor).patch(url, {"payload": {"name": "Bo"}}, format="json").status_code == 200
    assert mine.get().owner == editor
    ran = token_client(editor).post(f"{url}run/").json()
    due = mine.get().next_run_at + timedelta(seconds=1)
    ticked = [job for job in scheduler.tick(now=due) if job.schedule_id == created.json()["id"]]

    assert ran["owner"] == editor.pk and [job.owner for job in ticked] == [editor], "never as the creator (admin)"
    assert token_client(admin).put(url, body, format="json").status_code == 200
    assert mine.get().owner == admin


def test_schedules__each_run_names_its_schedule_in_its_timeline(redis_url, admin):
    client = token_client(admin)
    schedule = client.post(SCHEDULES_URL, schedule_body(), format="json").json()
    job = client.post(f"{SCHEDULES_URL}{schedule['id']}/run/").json()

    (submitted,) = client.get(f"{JOBS_URL}{job['id']}/events/").json()["results"]

    assert submitted["kind"] == "submitted"
    assert submitted["data"]["schedule"] == {"id": schedule["id"], "name": "nightly"}
    assert "'nightly'" in submitted["message"] and f"#{schedule['id']}" in submitted["message"]


def test_schedules__a_staff_only_type_needs_a_staff_editor(redis_url, admin):
    # Not staff, but with every schedule permission: the runs would be submitted as this user.
    scheduler_user = make_user("planner")
    scheduler_user.user_permissions.add(*Permission.objects.filter(codename__endswith="_jobschedule"))
    client = token_client(scheduler_user)
    before = state()

    refused = client.post(SCHEDULES_URL, schedule_body(type="admin-only", payload={}), format="json")

    assert refused.status_code == 400 and "Only staff" in refused.json()["type"][0]
    assert state() == before
    staff_made = token_client(admin).post(SCHEDULES_URL, schedule_body(type="admin-only", payload={}), format="json")
    assert staff_made.status_code == 201
    renamed = client.patch(f"{SCHEDULES_URL}{staff_made.json()['id']}/", {"name": "mine now"}, format="json")
    assert renamed.status_code == 400 and "type" in renamed.json()
    kept = JobSchedule.objects.get(pk=staff_made.json()["id"])
    assert kept.owner == admin and kept.name == "nightly"
    assert client.post(SCHEDULES_URL, schedule_body(name="x"), format="json").status_code == 201, "other types: fine"


def test_schedules__run_now_of_an_unknown_schedule_is_404(redis_url, admin):
    before = state()
    assert token_client(admin).post(f"{SCHEDULES_URL}999/run/").status_code == 404
    assert state() == before


# --------------------------------------------------------------------------------------------------------------
# OpenAPI


def test_schema__openapi_document_of_the_whole_api(redis_url, capsys):
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.") and document["info"]["title"] == "Jobs API"
    assert document["servers"] == [{"url": "/api"}]
    assert set(document["paths"]) == {
        "/job-types/",
        "/jobs/",
        "/jobs/{id}/",
        "/jobs/{id}/events/",
        "/jobs/{id}/cancel/",
        "/jobs/{id}/retry/",
        "/queues/",
        "/queues/{name}/pause/",
        "/queues/{name}/resume/",
        "/queues/{name}/requeue-failed/",
        "/schedules/",
        "/schedules/{id}/",
        "/schedules/{id}/run/",
        "/health/",
        "/uploads/",
        "/uploads/{id}/",
    }
    create = document["paths"]["/jobs/"]["post"]
    assert {"202", "200", "400", "403", "409", "413", "429"} <= set(create["responses"])
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in create["parameters"])
    listing = {p["name"] for p in document["paths"]["/jobs/"]["get"]["parameters"]}
    assert {"status", "type", "created_after", "created_before", "cursor", "page_size"} <= listing
    job = document["components"]["schemas"]["Job"]["properties"]
    assert set(job) == JOB_KEYS
    assert set(document["components"]["securitySchemes"]) == {"tokenAuth", "cookieAuth"}
    # drf-spectacular reports what it could not work out on stderr: the document has no guesses.
    assert "Warning" not in capsys.readouterr().err


def test_docs__swagger_ui_from_local_static_files(redis_url):
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(assets) >= 3
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        assert finders.find(asset.removeprefix("/static/")), asset
    assert "cdn." not in page and "https://" not in page
    assert '"/api/schema/"' in page
