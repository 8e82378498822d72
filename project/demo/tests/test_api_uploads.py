"""An API client starts contact-import and csv-stats: it uploads a CSV (POST /api/uploads/), then names its id."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from jobs.models import JobLog, Upload
from project.demo.models import Contact
from tests.factories import make_user

from .test_contact_import import ROWS

pytestmark = pytest.mark.django_db(transaction=True)


def api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def upload_csv(client: APIClient, rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    # What curl -F file=@contacts.csv sends: its own type for a .csv is application/octet-stream.
    file = SimpleUploadedFile("contacts.csv", out.getvalue().encode(), content_type="application/octet-stream")
    response = client.post("/api/uploads/", {"file": file}, format="multipart")
    assert response.status_code == 201, response.content
    return str(response.json()["id"])


def start(client: APIClient, type_name: str, payload: dict) -> JobLog:
    response = client.post("/api/jobs/", {"type": type_name, "payload": payload}, format="json")
    assert response.status_code == 202, response.content
    return JobLog.objects.get(pk=response.json()["id"])


def test_contact_import__from_an_api_upload(user, run_until_done, redis_url):
    client = api(user)
    upload_id = upload_csv(client, ROWS)

    job = run_until_done(start(client, "contact-import", {"upload": upload_id}))

    assert job.status == "succeeded", job.error_message
    assert job.result == {"rows": 7, "total": 7, "imported": 3, "updated": 0, "skipped": 1, "failed": 3}
    assert Contact.objects.filter(owner=user).count() == 3
    assert Upload.objects.filter(pk=upload_id, owner=user).exists()


def test_contact_import__another_users_upload_fails_clearly_and_imports_nothing(user, run_until_done, redis_url):
    upload_id = upload_csv(api(user), ROWS)
    bob = make_user("bob")

    job = run_until_done(start(api(bob), "contact-import", {"upload": upload_id}))

    assert job.status == "failed" and job.attempts == 1 and job.error_type == "PermanentError"
    assert job.error_message == (
        f"Upload {upload_id} does not exist or is not yours: a job reads only uploads of the user who submitted it."
    )
    assert not Contact.objects.exists() and job.progress_percent == 0  # it stopped before reading a byte


def test_csv_stats__from_an_api_upload(user, run_until_done, redis_url):
    client = api(user)
    upload_id = upload_csv(client, [["n", "word"], ["1", "a"], ["2", "b"], ["3"]])

    job = run_until_done(start(client, "csv-stats", {"upload": upload_id}))

    assert job.status == "succeeded", job.error_message
    assert job.result["upload"] == upload_id and job.result["rows"] == 2
    assert job.result["columns"]["n"] == {"kind": "number", "min": 1.0, "max": 2.0, "mean": 1.5, "sum": 3.0}
    assert job.failed_items == [{"item": "line 4", "error": "expected 2 fields, found 1"}]


def test_csv_stats__another_users_upload_fails_clearly(user, run_until_done, redis_url):
    upload_id = upload_csv(api(user), [["n"], ["1"]])

    job = run_until_done(start(api(make_user("bob")), "csv-stats", {"upload": upload_id}))

    assert job.status == "failed" and job.attempts == 1 and "is not yours" in job.error_message


@pytest.mark.parametrize("type_name", ["contact-import", "csv-stats"])
def test_api__a_payload_without_upload_or_file_is_a_400(type_name, user, redis_url):
    response = api(user).post("/api/jobs/", {"type": type_name, "payload": {}}, format="json")

    assert response.status_code == 400
    assert response.json() == {"payload": {"upload": ["Give the id of a file sent to POST /api/uploads/."]}}
    assert not JobLog.objects.exists()
