"""POST /api/uploads/ and GET /api/uploads/{id}/: files a job reads by id, only its owner's, kept as long as jobs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import submit
from jobs.models import JobLog, JobStatus, Upload
from jobs.retention import cleanup_finished_jobs
from jobs.transport.connections import get_connection
from tests.integration.api_support import JOBS_URL, session_client, token_client

UPLOADS_URL = "/api/uploads/"
CSV = b"name,email\nAda,ada@example.com\n"


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return Path(settings.MEDIA_ROOT)


def stored_files(media_root: Path) -> list[str]:
    return sorted(str(p.relative_to(media_root)) for p in media_root.rglob("*") if p.is_file())


def csv_file(content: bytes = CSV, name: str = "contacts.csv", content_type: str = "text/csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


def upload(client: APIClient, file: SimpleUploadedFile | None = None):
    return client.post(UPLOADS_URL, {"file": file or csv_file()}, format="multipart")


def reads(job_id: str) -> list[bytes]:
    return get_connection().lrange(f"test:read-upload:{job_id}", 0, -1)


@pytest.mark.parametrize("job_type", ["read-upload", "isolated-read-upload"])
def test_upload__stored_as_the_callers_and_read_by_their_job(job_type, redis_url, alice, drain, media_root):
    client = token_client(alice)

    response = upload(client, csv_file(name="My Contacts.CSV", content_type="text/csv; charset=utf-8"))

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"id", "name", "size", "content_type", "created_at"}
    assert (body["name"], body["size"], body["content_type"]) == ("My Contacts.CSV", len(CSV), "text/csv")
    row = Upload.objects.get(pk=body["id"])
    assert row.owner == alice
    # A random name under uploads/, never the client's: the extension alone is kept.
    [path] = stored_files(media_root)
    assert path == row.file.name and path.startswith("uploads/") and path.endswith(".csv") and "Contacts" not in path
    assert (media_root / path).read_bytes() == CSV
    assert client.get(f"{UPLOADS_URL}{body['id']}/").json() == body

    job = client.post(JOBS_URL, {"type": job_type, "payload": {"upload": body["id"]}}, format="json").json()
    drain(lambda: JobLog.objects.get(pk=job["id"]).is_finished)

    done = JobLog.objects.get(pk=job["id"])
    assert done.status == JobStatus.SUCCEEDED, done.error_message
    assert done.result == {"bytes": len(CSV), "text": CSV.decode()}


def test_upload__another_users_id_fails_their_job_at_once_and_reads_nothing(redis_url, alice, bob, admin, drain):
    alices = upload(token_client(alice)).json()
    bobs_client = token_client(bob)

    job = bobs_client.post(JOBS_URL, {"type": "read-upload", "payload": {"upload": alices["id"]}}, format="json")
    assert job.status_code == 202
    drain(lambda: JobLog.objects.get(pk=job.json()["id"]).is_finished)

    failed = JobLog.objects.get(pk=job.json()["id"])
    assert failed.status == JobStatus.FAILED and failed.attempts == 1  # permanent: no retry of max_attempts=3
    assert failed.error_type == "PermanentError"
    assert f"Upload {alices['id']} does not exist or is not yours" in failed.error_message
    assert reads(str(failed.pk)) == []
    # An id that names nothing fails the same way: the error does not tell whether another user's id exists.
    ghost = submit("read-upload", {"upload": "00000000-0000-4000-8000-000000000000"}, user=bob)
    drain(lambda: JobLog.objects.get(pk=ghost.pk).is_finished)
    assert "does not exist or is not yours" in JobLog.objects.get(pk=ghost.pk).error_message

    # Not visible to bob either; jobs.view_joblog sees it.
    missing = bobs_client.get(f"{UPLOADS_URL}{alices['id']}/")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert bobs_client.get(f"{UPLOADS_URL}not-a-uuid/").status_code == 404
    assert token_client(admin).get(f"{UPLOADS_URL}{alices['id']}/").json() == alices


def test_upload__a_job_without_an_owner_may_read_any(redis_url, alice, drain):
    alices = upload(token_client(alice)).json()
    job = submit("read-upload", {"upload": alices["id"]})  # code or a schedule: no user

    drain(lambda: JobLog.objects.get(pk=job.pk).is_finished)

    assert JobLog.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED


def test_upload__too_big_is_413_and_stores_nothing(redis_url, alice, settings, media_root):
    settings.JOBS = {**settings.JOBS, "MAX_UPLOAD_BYTES": 100}
    client = token_client(alice)

    response = upload(client, csv_file(b"x" * 101))

    assert response.status_code == 413, response.content
    assert response.json()["code"] == "upload_too_large" and "100 bytes" in response.json()["detail"]
    assert not Upload.objects.exists() and stored_files(media_root) == []
    assert upload(client, csv_file(b"x" * 100)).status_code == 201  # the limit itself is allowed


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"file": csv_file(name="run.exe", content_type="text/csv")}, 415, "allowed extensions are .csv"),
        ({"file": csv_file(name="contacts", content_type="text/csv")}, 415, "allowed extensions are .csv"),
        ({"file": csv_file(content_type="image/png")}, 415, "was sent as image/png"),
        ({"file": csv_file(b"")}, 400, "The submitted file is empty."),
        ({"file": [csv_file(), csv_file()]}, 400, "Send exactly one file."),
        ({"other": csv_file()}, 400, "No file was submitted."),
    ],
    ids=["extension", "no-extension", "declared-type", "empty", "two-files", "no-file-field"],
)
def test_upload__refused_files_are_a_clear_4xx_and_store_nothing(body, status, says, redis_url, alice, media_root):
    response = token_client(alice).post(UPLOADS_URL, body, format="multipart")

    assert response.status_code == status, response.content
    answer = response.json()
    if status == 415:
        assert answer["code"] == "unsupported_file_type" and says in answer["detail"]
    else:
        assert answer["file"] == [says]
    assert not Upload.objects.exists() and stored_files(media_root) == []


def test_upload__json_instead_of_multipart_is_415(redis_url, alice, media_root):
    response = token_client(alice).post(UPLOADS_URL, {"file": "contacts.csv"}, format="json")

    assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"
    assert not Upload.objects.exists()


def test_upload__allowed_kinds_follow_the_settings(redis_url, alice, settings):
    settings.JOBS = {**settings.JOBS, "UPLOAD_EXTENSIONS": (".xml",), "UPLOAD_CONTENT_TYPES": ("application/xml",)}
    client = token_client(alice)

    assert upload(client).status_code == 415
    assert upload(client, csv_file(b"<a/>", name="a.xml", content_type="application/xml")).status_code == 201


def test_upload__anonymous_is_401_and_a_session_needs_csrf(redis_url, alice, media_root):
    anonymous = APIClient()
    assert upload(anonymous).status_code == 401
    assert anonymous.get(f"{UPLOADS_URL}00000000-0000-4000-8000-000000000000/").status_code == 401

    assert upload(session_client(alice, enforce_csrf=True)).status_code == 403
    assert not Upload.objects.exists() and stored_files(media_root) == []
    assert upload(session_client(alice)).status_code == 201  # with its CSRF token (not enforced here): fine


def test_retention__deletes_old_uploads_with_their_files_and_keeps_recent_ones(redis_url, alice, media_root):
    client = token_client(alice)
    old, recent = upload(client).json(), upload(client).json()
    old_file = media_root / Upload.objects.get(pk=old["id"]).file.name
    recent_file = media_root / Upload.objects.get(pk=recent["id"]).file.name
    Upload.objects.filter(pk=old["id"]).update(created_at=timezone.now() - timedelta(days=31))

    report = cleanup_finished_jobs(batch_size=1)

    assert report.uploads_deleted == 1 and (report.jobs_deleted, report.events_deleted) == (0, 0)
    assert list(Upload.objects.values_list("pk", flat=True)) == [Upload.objects.get(pk=recent["id"]).pk]
    assert not old_file.exists() and recent_file.read_bytes() == CSV
    assert client.get(f"{UPLOADS_URL}{old['id']}/").status_code == 404

    Upload.objects.filter(pk=recent["id"]).update(created_at=timezone.now() - timedelta(days=40))
    call_command("jobs_cleanup")
    assert not Upload.objects.exists() and stored_files(media_root) == []


def test_upload__deleting_its_user_deletes_it_and_its_file(redis_url, alice, media_root):
    upload(token_client(alice))
    assert len(stored_files(media_root)) == 1

    alice.delete()

    assert not Upload.objects.exists() and stored_files(media_root) == []


def test_openapi__documents_the_upload_endpoints(redis_url, capsys):
    document = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    post = document["paths"]["/uploads/"]["post"]
    assert list(post["requestBody"]["content"]) == ["multipart/form-data"]
    schema_name = post["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    request = document["components"]["schemas"][schema_name]
    assert request["properties"]["file"]["format"] == "binary" and request["required"] == ["file"]
    # 403: a session write without its CSRF token.
    assert set(post["responses"]) == {"201", "400", "401", "403", "413", "415"}
    created = post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(document["components"]["schemas"][created]["properties"]) == {
        "id",
        "name",
        "size",
        "content_type",
        "created_at",
    }
    assert set(document["paths"]["/uploads/{id}/"]["get"]["responses"]) == {"200", "401", "404"}
    assert "Warning" not in capsys.readouterr().err
