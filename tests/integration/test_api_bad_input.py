"""Bad input to the REST API: each case a clear 4xx, with no row written and nothing enqueued in Redis.

Ends with a property-based pass (hypothesis) that throws arbitrary JSON bodies and path segments at the API.
"""

from __future__ import annotations

import json
import string
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jobs.models import JobStatus
from tests.factories import make_job, make_user
from tests.integration.api_support import JOBS_URL, job_url, state, token_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(redis_url, alice):
    return token_client(alice)


def post_refused(client, body, status=400, **kwargs):
    """POST jobs/ and check that it was refused with ``status`` and changed nothing; returns the JSON answer."""
    before = state()
    if isinstance(body, bytes | str):
        response = client.generic("POST", JOBS_URL, body, content_type=kwargs.pop("content_type", "application/json"))
    else:
        response = client.post(JOBS_URL, body, format="json", **kwargs)
    assert response.status_code == status, (response.status_code, response.content)
    assert state() == before
    return response.json()


# --------------------------------------------------------------------------------------------------------------
# POST jobs/: what is submitted


def test_unknown_type(client):
    answer = post_refused(client, {"type": "no-such-type"})
    assert answer == {"detail": "There is no job type named 'no-such-type'.", "code": "unknown_job_type"}


def test_missing_type(client):
    assert "type" in post_refused(client, {"payload": {}})


def test_payload_failing_the_type_serializer_gives_field_errors(client):
    answer = post_refused(client, {"type": "greet", "payload": {"name": "x" * 21, "times": 9}})
    assert set(answer) == {"payload"} and set(answer["payload"]) == {"name", "times"}
    assert answer["payload"]["times"] == ["Ensure this value is less than or equal to 5."]


def test_payload_missing_a_required_field(client):
    assert post_refused(client, {"type": "greet", "payload": {}}) == {"payload": {"name": ["This field is required."]}}


@pytest.mark.parametrize("payload", [[1, 2], "text", 5, True, None])
def test_payload_not_an_object(client, payload):
    assert list(post_refused(client, {"type": "echo", "payload": payload})) == ["payload"]


@pytest.mark.parametrize("type_name", [5, ["echo"], {"name": "echo"}, None, True])
def test_type_not_a_string(client, type_name):
    assert list(post_refused(client, {"type": type_name})) == ["type"]


@pytest.mark.parametrize("priority", [5, ["high"], {"level": "high"}, True, None])
def test_priority_not_a_string(client, priority):
    assert list(post_refused(client, {"type": "echo", "priority": priority})) == ["priority"]


@pytest.mark.parametrize("priority", ["urgent", "HIGH", ""])
def test_invalid_priority(client, priority):
    assert list(post_refused(client, {"type": "echo", "priority": priority})) == ["priority"]


@pytest.mark.parametrize("delay", ["10", "soon", True, [10], {"s": 10}])
def test_delay_not_a_number(client, delay):
    assert post_refused(client, {"type": "echo", "delay": delay}) == {"delay": ["A valid number is required."]}


@pytest.mark.parametrize("delay", [-1, -0.001])
def test_negative_delay(client, delay):
    assert list(post_refused(client, {"type": "echo", "delay": delay})) == ["delay"]


def test_delay_too_far_ahead(client):
    assert list(post_refused(client, {"type": "echo", "delay": 1e300})) == ["delay"]


def test_delay_with_run_at(client):
    at = (timezone.now() + timedelta(hours=1)).isoformat()
    answer = post_refused(client, {"type": "echo", "delay": 5, "run_at": at})
    assert answer == {"detail": "Give either delay or run_at, not both.", "code": "invalid"}


@pytest.mark.parametrize(
    "run_at", ["tomorrow", "2030-02-30T10:00:00Z", "2030-01-01T25:00:00Z", "1700000000", 1700000000, ["2030"]]
)
def test_run_at_in_a_bad_format(client, run_at):
    assert list(post_refused(client, {"type": "echo", "run_at": run_at})) == ["run_at"]


def test_run_at_beyond_what_the_engine_can_count(client):
    assert list(post_refused(client, {"type": "echo", "run_at": "9999-12-31T23:59:59.5+00:00"})) == ["run_at"]


def test_oversized_payload_is_413(client, settings):
    settings.JOBS = {**settings.JOBS, "MAX_PAYLOAD_BYTES": 1000}
    answer = post_refused(client, {"type": "echo", "payload": {"blob": "x" * 1000}}, status=413)
    assert answer["code"] == "payload_too_large" and "1000" in answer["detail"]


def test_oversized_body_is_413_before_parsing(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    answer = post_refused(client, json.dumps({"type": "echo", "payload": {"blob": "x" * 20_000}}), status=413)
    assert answer["code"] == "request_too_large"


def test_default_payload_limit_is_one_mebibyte(client):
    answer = post_refused(client, {"type": "echo", "payload": {"blob": "x" * (1024 * 1024)}}, status=413)
    assert answer["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"type": "echo", "payload": {"a": "nul \\u0000 char"}}', "NUL"),
        ('{"type": "echo", "payload": {"nul \\u0000 key": 1}}', "NUL"),
        ('{"type": "echo", "payload": {"a": "\\ud800"}}', "surrogate"),
        ('{"type": "echo", "payload": {"a": [1e400]}}', "finite"),
    ],
)
def test_payload_text_or_numbers_no_database_can_store(client, text, reason):
    # PostgreSQL's jsonb refuses these; refusing them everywhere keeps SQLite and PostgreSQL alike.
    answer = post_refused(client, text)
    assert reason in answer["payload"][0]


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "not json",
        '{"type": "echo", "payload": {"a": NaN}}',
        '{"type": "echo", "delay": Infinity}',
        "[" * 100_000 + "]" * 100_000,
        '{"type": "echo", "payload": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + "}",
    ],
)
def test_malformed_json(client, text):
    answer = post_refused(client, text)
    assert answer["code"] == "parse_error" or "non_field_errors" in answer


def test_empty_body(client):
    assert post_refused(client, "") == {"type": ["This field is required."]}


@pytest.mark.parametrize("body", [[{"type": "echo"}], "echo", 5, None])
def test_body_not_an_object(client, body):
    assert "non_field_errors" in post_refused(client, json.dumps(body))


def test_body_in_a_form_encoding_is_415(client):
    answer = post_refused(client, "type=echo", status=415, content_type="application/x-www-form-urlencoded")
    assert answer["code"] == "unsupported_media_type"


def test_body_in_an_unknown_charset(client):
    post_refused(client, b'{"type": "echo"}', content_type="application/json; charset=zlib")


@pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9", "tab\there"])
def test_bad_idempotency_key(client, key):
    assert list(post_refused(client, {"type": "echo"}, headers={"Idempotency-Key": key})) == ["Idempotency-Key"]


# --------------------------------------------------------------------------------------------------------------
# Paths and other people's jobs


@pytest.mark.parametrize("job_id", ["not-a-uuid", "123", "2f1e9a4e-0000-4000-8000", "%20", "..", "null"])
@pytest.mark.parametrize(("method", "action"), [("get", ""), ("get", "events"), ("post", "cancel"), ("post", "retry")])
def test_malformed_uuid_in_the_path_is_404(client, job_id, method, action):
    before = state()
    response = getattr(client, method)(f"{JOBS_URL}{job_id}/" + (f"{action}/" if action else ""))
    assert response.status_code == 404 and response.json() == {"detail": "No such job.", "code": "not_found"}
    assert state() == before


@pytest.mark.parametrize(("method", "action"), [("get", ""), ("get", "events"), ("post", "cancel"), ("post", "retry")])
def test_another_users_job_is_404_and_untouched(client, method, action):
    bobs = make_job(owner=make_user("bob"), status=JobStatus.FAILED)
    before = state()
    response = getattr(client, method)(job_url(bobs, action))
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert state() == before


def test_cancel_in_the_wrong_state_is_409(client, alice):
    job = make_job(owner=alice, status=JobStatus.SUCCEEDED)
    before = state()
    assert client.post(job_url(job, "cancel")).status_code == 409
    assert state() == before


def test_retry_in_the_wrong_state_is_409(client, alice):
    job = make_job(owner=alice, status=JobStatus.QUEUED)
    before = state()
    assert client.post(job_url(job, "retry")).status_code == 409
    assert state() == before


def test_wrong_method_is_405(client, alice):
    job = make_job(owner=alice)
    assert client.delete(job_url(job)).status_code == 405
    assert client.get(job_url(job, "cancel")).status_code == 405
    assert client.put(JOBS_URL, {"type": "echo"}, format="json").status_code == 405


# --------------------------------------------------------------------------------------------------------------
# Property-based: arbitrary JSON and path segments never cause a 5xx, and a 4xx never changes anything.

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
# Close to valid, so that many bodies get past the serializer into submit() and the database.
near_valid = st.builds(
    lambda base, options, when: {**base, **options, **when},
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["echo", "greet", "flaky", "admin-only"]),
            "payload": st.fixed_dictionaries(
                {"name": st.text(min_size=1, max_size=20) | json_values},
                optional={"times": st.integers(min_value=0, max_value=6) | json_values, "x": json_values},
            ),
        }
    ),
    st.fixed_dictionaries({}, optional={"priority": st.sampled_from(["critical", "high", "normal", "low"])}),
    st.one_of(
        st.just({}),
        st.fixed_dictionaries({"delay": st.floats(min_value=0, max_value=1e7) | st.integers(0, 10**6)}),
        st.fixed_dictionaries(
            {"run_at": st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())}
        ),
    ),
)
idempotency_keys = st.one_of(
    st.none(), st.text(alphabet=string.ascii_letters + string.digits + "-", min_size=1, max_size=8), st.text(max_size=8)
)
# Anything in any field.
wild = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["echo", "greet", "no-such-type", ""]) | json_values,
        "payload": json_values,
        "priority": st.sampled_from(["normal", "urgent"]) | json_values,
        "delay": st.floats() | json_values,
        "run_at": st.text(max_size=30) | json_values,
    },
)
fuzz = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def unthrottled(settings):
    settings.JOBS = {**settings.JOBS, "SUBMIT_RATE": None}


@fuzz
@given(body=st.one_of(near_valid, wild, json_values), idempotency_key=idempotency_keys)
def test_fuzz__post_jobs(client, unthrottled, body, idempotency_key):
    before = state()
    headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key.encode().decode("latin-1")}
    response = client.generic("POST", JOBS_URL, json.dumps(body), content_type="application/json", headers=headers)
    event(f"POST jobs/ answered {response.status_code}")  # --hypothesis-show-statistics: how deep the bodies got
    assert response.status_code < 500, response.content
    if 400 <= response.status_code < 500:
        assert state() == before, (body, response.content)
        assert isinstance(response.json(), dict)
    else:
        assert response.status_code in (200, 202)


@fuzz
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzz__post_jobs_raw_bytes(client, unthrottled, raw):
    before = state()
    response = client.generic("POST", JOBS_URL, raw, content_type="application/json")
    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        assert state() == before


@fuzz
@given(
    segment=st.text(max_size=40) | st.uuids().map(str),
    route=st.sampled_from(
        [
            ("get", "/api/jobs/{}/"),
            ("get", "/api/jobs/{}/events/"),
            ("post", "/api/jobs/{}/cancel/"),
            ("post", "/api/jobs/{}/retry/"),
            ("post", "/api/queues/{}/pause/"),
            ("get", "/api/schedules/{}/"),
            ("post", "/api/schedules/{}/run/"),
            ("get", "/api/jobs/?status={}"),
            ("get", "/api/jobs/?cursor={}"),
            ("get", "/api/jobs/?created_after={}"),
        ]
    ),
)
def test_fuzz__path_segments_and_query_values(redis_url, unthrottled, segment, route):
    # A superuser, so that every route is reached past its permission check.
    admin, _ = get_user_model().objects.get_or_create(
        username="fuzz-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    method, template = route
    before = state()
    response = getattr(token_client(admin), method)(template.format(quote(segment, safe="")))
    event(f"{method} {template} answered {response.status_code}")
    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        assert state() == before
