"""The OpenAPI document says what the server does: statuses, lengths, patterns, and one body shape per schedule kind.

.ci/schemathesis_run.py checks the same against the running demo with generated requests; these tests pin the cases
that a schemathesis run once found, with the server's answer next to the document's promise.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import JobSchedule
from tests.factories import make_job
from tests.integration.api_support import JOBS_URL, job_url, state, token_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def document(redis_url: str) -> dict[str, Any]:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return dict(response.json())


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def parameter(operation: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in operation["parameters"] if p["name"] == name)


def paginated_urls(job: Any) -> list[str]:
    return [JOBS_URL, job_url(job, "events"), "/api/schedules/"]


# --------------------------------------------------------------------------------------------------------------
# Pagination: a bad cursor or page_size is a documented 400


@pytest.mark.parametrize("cursor", ["junk", "Infinity", "zzzz"])
def test_pagination__a_bad_cursor_is_a_400(redis_url, admin, cursor):
    job = make_job(owner=admin)
    client = token_client(admin)
    for url in paginated_urls(job):
        response = client.get(url, {"cursor": cursor})
        assert response.status_code == 400, (url, response.content)
        assert "cursor" in response.json()


def test_pagination__a_cursor_whose_position_is_not_a_date_is_a_400_not_a_500(redis_url, admin):
    job = make_job(owner=admin)
    client = token_client(admin)
    cursor = "bz0xJnA9eA=="  # "o=1&p=x": well formed, but jobs and events are ordered by a date
    for url in paginated_urls(job)[:2]:
        response = client.get(url, {"cursor": cursor})
        assert response.status_code == 400, (url, response.content)
        assert "cursor" in response.json()


@pytest.mark.parametrize("size", ["null", "", "0", "-1", "abc", "1.5", "١"])
def test_pagination__a_page_size_that_is_not_a_whole_number_from_1_is_a_400(redis_url, admin, size):
    job = make_job(owner=admin)
    client = token_client(admin)
    before = state()
    for url in paginated_urls(job):
        response = client.get(url, {"page_size": size})
        assert response.status_code == 400, (url, size, response.content)
        assert "page_size" in response.json()
    assert state() == before
    # Above the maximum is still capped, not refused.
    capped = client.get(JOBS_URL, {"page_size": "100000000000000000000"})
    assert capped.status_code == 200 and len(capped.json()["results"]) == 1


def test_pagination__cursor_and_page_size_are_documented_with_their_400(document):
    for path, method in [("/jobs/", "get"), ("/jobs/{id}/events/", "get"), ("/schedules/", "get")]:
        operation = document["paths"][path][method]
        assert parameter(operation, "page_size")["schema"] == {"type": "integer", "minimum": 1}
        assert parameter(operation, "cursor")["schema"] == {"type": "string"}
        assert "400" in operation["responses"], path


# --------------------------------------------------------------------------------------------------------------
# Statuses


EXPECTED_STATUSES = {
    ("/jobs/", "get"): {"200", "400", "401"},
    ("/jobs/", "post"): {"200", "202", "400", "401", "403", "409", "413", "415", "429"},
    ("/jobs/{id}/", "get"): {"200", "401", "404"},
    ("/jobs/{id}/cancel/", "post"): {"202", "401", "403", "404", "409"},
    ("/jobs/{id}/retry/", "post"): {"202", "401", "403", "404", "409"},
    ("/queues/", "get"): {"200", "401", "403"},
    ("/queues/{name}/pause/", "post"): {"200", "401", "403", "404"},
    ("/schedules/", "get"): {"200", "400", "401", "403"},
    ("/schedules/", "post"): {"201", "400", "401", "403", "413", "415"},
    ("/schedules/{id}/", "get"): {"200", "401", "403", "404"},
    ("/schedules/{id}/", "put"): {"200", "400", "401", "403", "404", "413", "415"},
    ("/schedules/{id}/", "patch"): {"200", "400", "401", "403", "404", "413", "415"},
    ("/schedules/{id}/", "delete"): {"204", "401", "403", "404"},
    ("/schedules/{id}/run/", "post"): {"202", "400", "401", "403", "404", "429"},
}


@pytest.mark.parametrize(("path", "method"), list(EXPECTED_STATUSES))
def test_document__every_status_an_operation_answers_is_listed(document, path, method):
    responses = document["paths"][path][method]["responses"]
    assert set(responses) == EXPECTED_STATUSES[(path, method)]
    for code, answer in responses.items():
        if code.startswith("4"):
            # Errors are JSON too: {"detail", "code"}, or field errors for a 400.
            assert "application/json" in answer["content"], (path, method, code)


def test_schedules__a_malformed_id_is_a_json_404(redis_url, admin):
    client = token_client(admin)
    for method, url in [("get", "/api/schedules/0.5/"), ("delete", "/api/schedules/null,null/")]:
        response = getattr(client, method)(url)
        assert response.status_code == 404 and response["Content-Type"] == "application/json"
        assert response.json()["code"] == "not_found"


# --------------------------------------------------------------------------------------------------------------
# Lengths and patterns


@pytest.mark.parametrize(
    ("key", "allowed"),
    [("a", True), ("deploy p1 (retry)", True), ("~" * 255, True), ("~" * 256, False), ("clé", False), ("", False)],
)
def test_document__the_idempotency_key_pattern_is_what_the_server_accepts(
    document, alice, django_capture_on_commit_callbacks, key, allowed
):
    schema = parameter(document["paths"]["/jobs/"]["post"], "Idempotency-Key")["schema"]
    in_schema = schema["minLength"] <= len(key) <= schema["maxLength"] and re.search(schema["pattern"], key)
    assert bool(in_schema) is allowed

    with django_capture_on_commit_callbacks(execute=True):
        response = token_client(alice).post(JOBS_URL, {"type": "echo"}, format="json", headers={"Idempotency-Key": key})
    assert (response.status_code == 202) is allowed, response.content


@pytest.mark.parametrize(("name", "allowed"), [("echo", True), ("", False), ("   ", False), ("a\x00b", False)])
def test_document__a_job_type_needs_a_visible_character(document, alice, name, allowed):
    schema = resolve(document, document["components"]["schemas"]["JobCreate"]["properties"]["type"])
    assert schema["minLength"] == 1 and schema["maxLength"] == 100
    assert bool(re.search(schema["pattern"], name)) is allowed
    response = token_client(alice).post(JOBS_URL, {"type": name}, format="json")
    assert (response.status_code == 202) is allowed, response.content


def test_document__an_empty_date_filter_is_documented_as_no_filter(document, alice):
    schema = parameter(document["paths"]["/jobs/"]["get"], "created_before")["schema"]
    assert {"type": "string", "maxLength": 0} in schema["anyOf"]
    make_job(owner=alice)
    response = token_client(alice).get(JOBS_URL, {"created_before": "", "created_after": ""})
    assert response.status_code == 200 and len(response.json()["results"]) == 1


def test_list__a_blank_or_unknown_type_filter_matches_nothing(redis_url, alice):
    make_job(owner=alice)
    response = token_client(alice).get(JOBS_URL, {"type": [" ", "no-such-type"]})
    assert response.status_code == 200 and response.json()["results"] == []


# --------------------------------------------------------------------------------------------------------------
# Schedules: one body shape per kind


def test_document__a_schedule_body_is_one_of_three_kinds_with_their_fields(document):
    for method in ("post", "put"):
        body = document["paths"]["/schedules/" if method == "post" else "/schedules/{id}/"][method]["requestBody"]
        one_of = resolve(document, body["content"]["application/json"]["schema"])["oneOf"]
        shapes = {}
        for ref in one_of:
            shape = resolve(document, ref)
            kind = resolve(document, shape["properties"]["kind"])
            shapes[kind["enum"][0]] = (shape, "kind" in shape["required"])
        assert set(shapes) == {"cron", "interval", "once"}
        cron, interval, once = shapes["cron"][0], shapes["interval"][0], shapes["once"][0]
        assert "cron" in cron["required"] and cron["properties"]["cron"]["minLength"] == 1
        assert re.search(cron["properties"]["cron"]["pattern"], "*/5 * * * 1-5")
        assert not re.search(cron["properties"]["cron"]["pattern"], "*/5 * * *")
        assert "interval_seconds" in interval["required"] and not interval["properties"]["interval_seconds"].get(
            "nullable"
        )
        assert "run_at" in once["required"] and not once["properties"]["run_at"].get("nullable")
        # Left out, kind is cron: only the cron shape may omit it.
        assert (shapes["cron"][1], shapes["interval"][1], shapes["once"][1]) == (False, True, True)


def test_schedules__a_cron_schedule_without_cron_is_refused_as_documented(document, admin):
    body = document["paths"]["/schedules/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    shapes = [resolve(document, ref) for ref in resolve(document, body)["oneOf"]]
    cron_shape = next(s for s in shapes if "cron" in resolve(document, s["properties"]["kind"])["enum"])
    assert "cron" in cron_shape["required"] and "kind" not in cron_shape["required"]
    before = JobSchedule.objects.count()
    response = token_client(admin).post("/api/schedules/", {"name": "n", "type": "echo"}, format="json")
    assert response.status_code == 400 and "cron" in response.json()
    assert JobSchedule.objects.count() == before
