"""REST API for jobs: submit, idempotency, throttling, visibility, list, events, cancel, retry, job types."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from jobs.models import EventKind, JobEvent, JobLog, JobStatus
from jobs.transport.queues import queue_lengths
from tests.factories import make_job, make_user
from tests.integration.admin_support import grant
from tests.integration.api_support import JOB_KEYS, JOBS_URL, job_url, session_client, state, token_client

pytestmark = pytest.mark.django_db(transaction=True)


def fresh(job_id) -> JobLog:
    return JobLog.objects.get(pk=job_id)


# --------------------------------------------------------------------------------------------------------------
# POST jobs/


def test_create__202_with_the_job_json(redis_url, alice):
    response = token_client(alice).post(JOBS_URL, {"type": "echo", "payload": {"hello": "world"}}, format="json")

    assert response.status_code == 202
    job = response.json()
    assert set(job) == JOB_KEYS
    row = fresh(job["id"])
    assert (row.payload, row.owner_id) == ({"hello": "world"}, alice.pk)
    assert job["type"] == "echo" and job["queue"] == "echo" and job["priority"] == "normal"
    # The answer carries the row's status at that moment: pushed to Redis already, since nothing wraps the request.
    assert job["status"] == "queued" == row.status and queue_lengths("echo")["normal"] == 1
    assert job["progress"] == {"percent": 0, "message": "", "stage": "", "data": {}}
    assert job["result"] is None and job["error"] is None
    assert job["attempts"] == 0 and job["max_attempts"] == 3
    assert job["failed_items"] == [] and job["failed_items_count"] == 0
    assert job["owner"] == alice.pk and job["schedule"] is None
    assert parse_datetime(job["created_at"]) == row.created_at and parse_datetime(job["enqueued_at"])
    assert job["run_at"] is None and job["started_at"] is None and job["finished_at"] is None
    assert job["status_url"] == f"http://testserver/api/jobs/{job['id']}/"
    assert job["ws_url"] == f"ws://testserver/ws/jobs/{job['id']}/"


def test_create__secure_request_gets_https_and_wss_urls(redis_url, alice):
    job = token_client(alice).post(JOBS_URL, {"type": "echo"}, format="json", secure=True).json()
    assert job["status_url"].startswith("https://testserver/api/jobs/")
    assert job["ws_url"] == f"wss://testserver/ws/jobs/{job['id']}/"


def test_create__payload_stored_as_validated(redis_url, alice):
    response = token_client(alice).post(
        JOBS_URL, {"type": "greet", "payload": {"name": "Ada", "times": "2"}}, format="json"
    )
    assert response.status_code == 202
    assert fresh(response.json()["id"]).payload == {"name": "Ada", "times": 2}


def test_create__payload_may_be_omitted(redis_url, alice):
    response = token_client(alice).post(JOBS_URL, {"type": "echo"}, format="json")
    assert response.status_code == 202 and fresh(response.json()["id"]).payload == {}


def test_create__priority_delay_and_run_at(redis_url, alice):
    client = token_client(alice)
    high = client.post(JOBS_URL, {"type": "echo", "priority": "high"}, format="json").json()
    assert high["priority"] == "high" and queue_lengths("echo")["high"] == 1

    before = timezone.now()
    delayed = client.post(JOBS_URL, {"type": "echo", "delay": 60}, format="json").json()
    assert delayed["status"] == "scheduled"
    assert timedelta(seconds=59) < parse_datetime(delayed["run_at"]) - before < timedelta(seconds=62)

    at = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    timed = client.post(JOBS_URL, {"type": "echo", "run_at": at.isoformat()}, format="json").json()
    assert timed["status"] == "scheduled" and parse_datetime(timed["run_at"]) == at

    zero = client.post(JOBS_URL, {"type": "echo", "delay": 0}, format="json").json()
    assert zero["status"] == "queued"


def test_create__idempotency_key_replays_the_same_job(redis_url, alice, bob):
    client = token_client(alice)
    body = {"type": "greet", "payload": {"name": "Ada"}}
    first = client.post(JOBS_URL, body, format="json", headers={"Idempotency-Key": "greet-ada"})
    replay = client.post(JOBS_URL, body, format="json", headers={"Idempotency-Key": "greet-ada"})

    assert (first.status_code, replay.status_code) == (202, 200)
    assert replay.json()["id"] == first.json()["id"]
    assert JobLog.objects.count() == 1 and queue_lengths("greet")["normal"] == 1

    # A replay answers with the job as it is now, whatever its state.
    client.post(job_url(first.json(), "cancel"))
    again = client.post(JOBS_URL, body, format="json", headers={"Idempotency-Key": "greet-ada"})
    assert (again.status_code, again.json()["status"]) == (200, "canceled")

    # The scope is owner + type: another user, or another type, with the same key is a new job.
    other = token_client(bob).post(JOBS_URL, body, format="json", headers={"Idempotency-Key": "greet-ada"})
    other_type = client.post(JOBS_URL, {"type": "echo"}, format="json", headers={"Idempotency-Key": "greet-ada"})
    assert other.status_code == other_type.status_code == 202
    assert len({first.json()["id"], other.json()["id"], other_type.json()["id"]}) == 3


def test_create__idempotency_key_with_another_payload_is_409(redis_url, alice):
    client = token_client(alice)
    headers = {"Idempotency-Key": "k1"}
    client.post(JOBS_URL, {"type": "greet", "payload": {"name": "Ada"}}, format="json", headers=headers)
    before = state()

    response = client.post(JOBS_URL, {"type": "greet", "payload": {"name": "Bob"}}, format="json", headers=headers)

    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict" and response.json()["detail"]
    assert state() == before


def test_create__staff_only_type(redis_url, alice, admin):
    before = state()
    refused = token_client(alice).post(JOBS_URL, {"type": "admin-only"}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert state() == before
    assert token_client(admin).post(JOBS_URL, {"type": "admin-only"}, format="json").status_code == 202


def test_create__throttled_per_user_with_retry_after(redis_url, alice, bob, settings):
    settings.JOBS = {**settings.JOBS, "SUBMIT_RATE": "2/minute"}
    client = token_client(alice)
    assert [client.post(JOBS_URL, {"type": "echo"}, format="json").status_code for _ in range(2)] == [202, 202]
    before = state()

    throttled = client.post(JOBS_URL, {"type": "echo"}, format="json")

    assert throttled.status_code == 429 and throttled.json()["code"] == "throttled"
    assert 0 < int(throttled["Retry-After"]) <= 60
    assert state() == before
    # Per user: bob has his own budget. Reads are not throttled.
    assert token_client(bob).post(JOBS_URL, {"type": "echo"}, format="json").status_code == 202
    assert client.get(JOBS_URL).status_code == 200


def test_create__throttle_off_with_none(redis_url, alice, settings):
    settings.JOBS = {**settings.JOBS, "SUBMIT_RATE": None}
    client = token_client(alice)
    assert {client.post(JOBS_URL, {"type": "echo"}, format="json").status_code for _ in range(5)} == {202}


# --------------------------------------------------------------------------------------------------------------
# GET jobs/{id}/ and visibility


def test_retrieve__owner_sees_own_job_others_get_404_staff_see_all(redis_url, alice, bob, admin):
    job = make_job(owner=alice, status=JobStatus.QUEUED)
    mine = token_client(alice).get(job_url(job))
    assert mine.status_code == 200 and mine.json()["id"] == str(job.pk)

    # Not yours is the same answer as absent: no leak of which ids exist.
    theirs = token_client(bob).get(job_url(job))
    absent = token_client(bob).get(job_url("2f1e9a4e-0000-4000-8000-000000000000"))
    assert theirs.status_code == absent.status_code == 404
    assert theirs.json() == absent.json() == {"detail": "No such job.", "code": "not_found"}

    assert token_client(admin).get(job_url(job)).status_code == 200


def test_retrieve__traceback_for_staff_only(redis_url, alice, admin):
    job = make_job(
        owner=alice,
        status=JobStatus.FAILED,
        error_type="ValueError",
        error_message="bad row",
        traceback="Traceback (most recent call last): ...",
    )
    assert token_client(alice).get(job_url(job)).json()["error"] == {"type": "ValueError", "message": "bad row"}
    assert token_client(admin).get(job_url(job)).json()["error"] == {
        "type": "ValueError",
        "message": "bad row",
        "traceback": "Traceback (most recent call last): ...",
    }


LEAKY_MESSAGE = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/secret_settings.py", line 3, in <module>\n'
    "    PASSWORD = os.environ['DATABASE_PASSWORD']\n"
    "KeyError: 'DATABASE_PASSWORD'"
)


@pytest.mark.parametrize(
    ("message", "shown", "secret"),
    [
        (LEAKY_MESSAGE, "KeyError: 'DATABASE_PASSWORD'", "secret_settings.py"),  # a traceback in an exception's text
        ("first line\nsecret second line", "first line", "secret second line"),
        ("x" * 5000 + "secret tail", "x" * 499 + "…", "secret tail"),
    ],
)
def test_retrieve__owner_gets_a_one_line_error_the_rest_goes_to_the_traceback(
    redis_url, alice, drain, message, shown, secret
):
    # The handler runs in a child process: its error crosses the pipe and the runner as text.
    job = token_client(alice).post(JOBS_URL, {"type": "isolated-echo", "payload": {"fail": message}}, format="json")
    drain(lambda: fresh(job.json()["id"]).status == JobStatus.FAILED)
    auditor = grant(make_user("auditor"), "view_joblog")

    owner_view = token_client(alice).get(job_url(job.json())).json()
    timeline = token_client(alice).get(job_url(job.json(), "events")).json()["results"]

    assert owner_view["error"] == {"type": "PermanentError", "message": shown}
    assert [event["message"] for event in timeline if event["kind"] == "failed"] == [shown]
    # The payload is the owner's own submission, shown back as it was; nothing else carries the secret.
    assert owner_view.pop("payload") == {"fail": message}
    assert secret not in str(owner_view) and secret not in str(timeline)
    staff_view = token_client(auditor).get(job_url(job.json())).json()
    assert staff_view["error"]["message"] == shown and message in staff_view["error"]["traceback"]


def test_retrieve__session_auth_reads_without_csrf(redis_url, alice):
    job = make_job(owner=alice)
    assert session_client(alice, enforce_csrf=True).get(job_url(job)).status_code == 200


# --------------------------------------------------------------------------------------------------------------
# Events


def test_events__timeline_oldest_first(redis_url, alice):
    client = token_client(alice)
    job = client.post(JOBS_URL, {"type": "echo"}, format="json").json()
    client.post(job_url(job, "cancel"))

    page = client.get(job_url(job, "events")).json()

    assert set(page) == {"next", "previous", "results"}
    assert [e["kind"] for e in page["results"]] == [EventKind.SUBMITTED, EventKind.CANCELED]
    assert set(page["results"][0]) == {"id", "kind", "status", "attempt", "message", "data", "created_at"}
    assert page["results"][1]["data"] == {"by": alice.pk}


def test_events__traceback_in_event_data_for_staff_only(redis_url, alice, bob, admin):
    job = make_job(owner=alice, status=JobStatus.FAILED)
    JobEvent.objects.create(
        job=job, kind=EventKind.FAILED, attempt=1, data={"error_type": "KeyError", "traceback": "Traceback ..."}
    )
    assert token_client(alice).get(job_url(job, "events")).json()["results"][0]["data"] == {"error_type": "KeyError"}
    assert token_client(admin).get(job_url(job, "events")).json()["results"][0]["data"]["traceback"] == "Traceback ..."
    assert token_client(bob).get(job_url(job, "events")).status_code == 404


def test_events__paginated_by_cursor(redis_url, alice):
    job = make_job(owner=alice)
    JobEvent.objects.bulk_create(
        JobEvent(job=job, kind=EventKind.DEFERRED, attempt=1, message=str(i)) for i in range(5)
    )
    client = token_client(alice)
    first = client.get(job_url(job, "events"), {"page_size": 3}).json()
    second = client.get(first["next"]).json()
    assert [e["message"] for e in first["results"] + second["results"]] == ["0", "1", "2", "3", "4"]
    assert second["next"] is None


# --------------------------------------------------------------------------------------------------------------
# Cancel and retry


def test_cancel__waiting_job_202_then_409(redis_url, alice):
    client = token_client(alice)
    job = client.post(JOBS_URL, {"type": "echo"}, format="json").json()

    canceled = client.post(job_url(job, "cancel"))

    assert canceled.status_code == 202 and canceled.json()["status"] == "canceled"
    assert fresh(job["id"]).status == JobStatus.CANCELED and queue_lengths("echo")["normal"] == 0
    again = client.post(job_url(job, "cancel"))
    assert again.status_code == 409 and again.json()["code"] == "already_finished"


def test_cancel__running_job_is_asked_to_stop(redis_url, alice):
    job = make_job(owner=alice, job_type="cooperative", queue="cooperative", status=JobStatus.RUNNING, attempts=1)
    response = token_client(alice).post(job_url(job, "cancel"))
    assert response.status_code == 202 and response.json()["status"] == "running"
    assert fresh(job.pk).cancel_requested_at is not None


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED])
def test_cancel__terminal_job_is_409(redis_url, alice, status):
    job = make_job(owner=alice, status=status)
    before = state()
    response = token_client(alice).post(job_url(job, "cancel"))
    assert response.status_code == 409 and response.json()["code"] == "already_finished"
    assert state() == before


def test_retry__failed_job_runs_again_under_the_same_id(redis_url, alice, drain):
    client = token_client(alice)
    job = client.post(JOBS_URL, {"type": "permanent"}, format="json").json()
    drain(lambda: fresh(job["id"]).status == JobStatus.FAILED)

    retried = client.post(job_url(job, "retry"))

    assert retried.status_code == 202
    assert retried.json()["id"] == job["id"] and retried.json()["status"] == "queued"
    assert retried.json()["error"] is None and retried.json()["attempts"] == 1
    assert queue_lengths("permanent")["normal"] == 1
    assert EventKind.RETRIED in [e["kind"] for e in client.get(job_url(job, "events")).json()["results"]]


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.SCHEDULED])
def test_retry__not_failed_or_canceled_is_409(redis_url, alice, status):
    job = make_job(owner=alice, status=status)
    before = state()
    response = token_client(alice).post(job_url(job, "retry"))
    assert response.status_code == 409 and response.json()["code"] == "not_retryable"
    assert state() == before


def test_retry__canceled_job(redis_url, alice):
    job = make_job(owner=alice, status=JobStatus.CANCELED)
    response = token_client(alice).post(job_url(job, "retry"))
    assert response.status_code == 202 and response.json()["status"] == "queued"


# --------------------------------------------------------------------------------------------------------------
# GET jobs/


def test_list__own_jobs_newest_first_staff_all(redis_url, alice, bob, admin):
    mine = [make_job(owner=alice) for _ in range(3)]
    make_job(owner=bob)
    listed = token_client(alice).get(JOBS_URL).json()
    assert set(listed) == {"next", "previous", "results"}
    assert [j["id"] for j in listed["results"]] == [str(j.pk) for j in reversed(mine)]
    assert set(listed["results"][0]) == JOB_KEYS
    assert len(token_client(admin).get(JOBS_URL).json()["results"]) == 4


def test_list__filters(redis_url, alice):
    old = make_job(owner=alice, status=JobStatus.SUCCEEDED)
    JobLog.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    failed = make_job(owner=alice, status=JobStatus.FAILED)
    queued = make_job(owner=alice, job_type="greet", queue="greet", status=JobStatus.QUEUED)
    client = token_client(alice)

    def ids(**params):
        response = client.get(JOBS_URL, params)
        assert response.status_code == 200, response.json()
        return {j["id"] for j in response.json()["results"]}

    assert ids(status="failed") == {str(failed.pk)}
    assert ids(status=["failed", "queued"]) == {str(failed.pk), str(queued.pk)}
    assert ids(type="greet") == {str(queued.pk)}
    assert ids(type="echo", status="succeeded") == {str(old.pk)}
    yesterday = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(created_after=yesterday) == {str(failed.pk), str(queued.pk)}
    assert ids(created_before=yesterday) == {str(old.pk)}
    assert ids(type="no-such-type") == set()


@pytest.mark.parametrize(
    "params", [{"status": "finished"}, {"created_after": "yesterday"}, {"created_before": "2024-13-01"}]
)
def test_list__bad_filter_is_400(redis_url, alice, params):
    response = token_client(alice).get(JOBS_URL, params)
    assert response.status_code == 400 and set(response.json()) == set(params)


def test_list__cursor_pagination_walks_every_job_once(redis_url, alice):
    jobs = [make_job(owner=alice) for _ in range(7)]
    # Equal timestamps must neither repeat nor skip a job across pages.
    JobLog.objects.filter(pk__in=[j.pk for j in jobs[2:5]]).update(created_at=jobs[2].created_at)
    client = token_client(alice)
    seen, url = [], JOBS_URL + "?page_size=3"
    while url:
        page = client.get(url).json()
        assert len(page["results"]) <= 3
        seen += [j["id"] for j in page["results"]]
        url = page["next"]
    assert sorted(seen) == sorted(str(j.pk) for j in jobs) and len(seen) == 7


def test_list__query_count_does_not_grow_with_page_size(redis_url, alice, admin, capsys):
    for i in range(60):
        make_job(owner=alice if i % 2 else admin, job_type="greet", queue="greet", status=JobStatus.SUCCEEDED)
    counts = {}
    for name, client in (("token", token_client(alice)), ("staff-token", token_client(admin))):
        for size in (5, 50):
            with CaptureQueriesContext(connection) as queries:
                response = client.get(JOBS_URL, {"page_size": size})
            assert len(response.json()["results"]) == min(size, 30 if name == "token" else 60)
            counts[name, size] = len(queries)
    session = session_client(alice)
    for size in (5, 50):
        with CaptureQueriesContext(connection) as queries:
            session.get(JOBS_URL, {"page_size": size})
        counts["session", size] = len(queries)
    with capsys.disabled():
        print(f"\nGET /api/jobs/ queries by (auth, page_size): {counts}")

    for name in ("token", "staff-token", "session"):
        assert counts[name, 5] == counts[name, 50]
    # Token: the token lookup (joined with its user) and the page. Session: session, user, page. A user who is not a
    # superuser adds Django's two permission lookups (their own and their groups'), once per request: may they see
    # everyone's jobs (jobs.view_joblog)?
    assert counts["staff-token", 50] == 2
    assert counts["token", 50] == 2 + 2
    assert counts["session", 50] == 3 + 2


def test_list__max_queries_with_pytest_django(redis_url, alice, django_assert_max_num_queries):
    for _ in range(50):
        make_job(owner=alice)
    client = token_client(alice)
    for size in (5, 50):
        # The token with its user, the user's and their groups' permissions (jobs.view_joblog?), the page.
        with django_assert_max_num_queries(4):
            assert len(client.get(JOBS_URL, {"page_size": size}).json()["results"]) == size


# --------------------------------------------------------------------------------------------------------------
# GET job-types/


def test_job_types__every_registered_type_with_limits_and_payload_schema(redis_url, alice):
    response = token_client(alice).get("/api/job-types/")
    assert response.status_code == 200
    types = {t["name"]: t for t in response.json()}
    assert {"echo", "greet", "flaky", "admin-only", "throttled", "capped"} <= set(types)
    assert set(types["echo"]) == {
        "name",
        "queue",
        "staff_only",
        "max_attempts",
        "timeout",
        "rate_limit",
        "concurrency",
        "payload_schema",
    }
    assert types["echo"]["payload_schema"] == {"type": "object"}
    greet = types["greet"]["payload_schema"]
    assert greet["required"] == ["name"] and greet["properties"]["times"]["maximum"] == 5
    assert types["admin-only"]["staff_only"] is True and types["echo"]["staff_only"] is False
    assert types["throttled"]["rate_limit"] == "3/s" and types["capped"]["concurrency"] == 2
    assert types["slow"]["timeout"] == 1 and types["permanent"]["max_attempts"] == 5
    assert types["echo"]["rate_limit"] is None and types["echo"]["concurrency"] is None


def test_job_types__need_a_user(redis_url):
    from rest_framework.test import APIClient

    assert APIClient().get("/api/job-types/").status_code == 401
