"""The demo's files: uploads checked before they are written, a job's files deleted with its row, and a job reading
only files its owner owns."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from jobs import submit
from jobs.models import JobLog
from jobs.retention import cleanup_finished_jobs
from project.demo.contacts import sample_rows
from project.demo.models import Contact, DemoFile
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)

CONTACTS_CSV = b"name,email,phone\nAda Lovelace,ada@example.com,+441234567890\nGrace,grace@example.com,\n"
MANY_CONTACTS_CSV = "\n".join(",".join(row) for row in sample_rows(20)).encode()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def start(client, type_name: str, data: dict) -> JobLog:
    response = client.post(f"/jobs/start/{type_name}/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    match = re.fullmatch(r"/jobs/([0-9a-f-]{36})/", response["Location"])
    assert match, response["Location"]
    return JobLog.objects.get(pk=match.group(1))


def upload_contacts(client, content: bytes = CONTACTS_CSV, **extra) -> JobLog:
    upload = SimpleUploadedFile("contacts.csv", content, content_type="text/csv")
    return start(client, "contact-import", {"upload": upload, "skip_duplicates": "on", **extra})


# --- uploads -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "content_type", "message"),
    [
        ("contacts.txt", CONTACTS_CSV, "text/csv", "contacts.txt is not a .csv file."),
        ("contacts.csv", CONTACTS_CSV, "image/png", "contacts.csv was sent as image/png, not as CSV text."),
        ("contacts.csv", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "text/csv", "contacts.csv is a binary file, not CSV text."),
        ("contacts.csv", "name,email\nJosé,jose@example.com\n".encode("latin-1"), "text/csv", "not UTF-8 text"),
        ("contacts.csv", b"first,last\nAda,Lovelace\n", "text/csv", "needs an email or a phone column"),
        ("contacts.csv", b"", "text/csv", "The file is empty."),
    ],
)
def test_upload__a_bad_file_writes_nothing_and_starts_no_job(
    user, client_for, media_root, name, content, content_type, message
):
    upload = SimpleUploadedFile(name, content, content_type=content_type)
    response = client_for(user).post("/jobs/start/contact-import/", {"upload": upload, "skip_duplicates": "on"})

    assert response.status_code == 400
    assert message in response.content.decode()
    assert files_under(media_root) == [] and not JobLog.objects.exists() and not DemoFile.objects.exists()


def test_upload__a_refused_submission_leaves_no_file(user, client_for, media_root, settings):
    settings.JOBS = {**settings.JOBS, "MAX_PAYLOAD_BYTES": 10}  # any payload is refused, after the upload's checks
    upload = SimpleUploadedFile("contacts.csv", CONTACTS_CSV, content_type="text/csv")
    response = client_for(user).post("/jobs/start/contact-import/", {"upload": upload})

    assert response.status_code == 400 and "at most 10 are accepted" in response.content.decode()
    assert files_under(media_root) == [] and not JobLog.objects.exists() and not DemoFile.objects.exists()


def test_upload__a_good_file_is_stored_as_its_uploaders(user, client_for, media_root):
    job = upload_contacts(client_for(user))

    assert (media_root / job.payload["file"]).read_bytes() == CONTACTS_CSV
    stored = DemoFile.objects.get()
    assert (stored.path, stored.owner, str(stored.job_id)) == (job.payload["file"], user, str(job.id))


# --- deleting a job deletes its files ------------------------------------------------------------------------------


def test_cleanup__deleting_finished_jobs_deletes_their_files(
    user, client_for, media_root, settings, tmp_path, run_until_done, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "project.demo.mail.JobFileEmailBackend"
    settings.EMAIL_FILE_PATH = mail = tmp_path / "mail"
    settings.DEMO_DEPLOY_FILE_DELAY = 0
    client = client_for(user)
    with django_capture_on_commit_callbacks(execute=True):
        jobs = [
            upload_contacts(client),
            start(client, "report", {"title": "T", "rows": "10"}),
            submit("deploy", {"project": "site", "title": "Site"}, user=user),
        ]
    jobs = [run_until_done(job) for job in jobs]
    with django_capture_on_commit_callbacks(execute=True):
        jobs.append(
            submit("email-notification", {"recipients": ["ada@example.com"], "subject": "S", "body": "B"}, user=user)
        )
        jobs.append(submit("bulk-message", {"template": "Hi {{name}}", "all_contacts": True}, user=user))
    jobs = [run_until_done(job) for job in jobs]
    assert [job.status for job in jobs] == ["succeeded"] * 5, [(j.job_type, j.error_message) for j in jobs]
    upload, report = media_root / jobs[0].payload["file"], media_root / jobs[1].result["path"]
    release, current = (
        media_root / jobs[2].result["folderPath"],
        media_root / "sites" / str(user.pk) / "site" / "current",
    )
    assert upload.is_file() and report.is_file() and (release / "index.html").is_file()
    assert current.resolve() == release.resolve()
    assert len(list(mail.glob(f"{jobs[3].id}-*.log"))) == 1 and len(list(mail.glob(f"{jobs[4].id}-*.log"))) == 1
    # What stays: the files of a job that is not finished, and anything outside the demo's folders.
    waiting = submit("report", {"title": "W", "rows": "1"}, user=user)
    kept = media_root / "reports" / f"{waiting.id}.csv"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text("kept")
    outside = tmp_path / "outside.txt"
    outside.write_text("not the demo's")
    DemoFile.objects.create(path="../outside.txt", owner=user, job_id=jobs[1].id)

    report_counts = cleanup_finished_jobs(now=timezone.now() + timedelta(days=3650))

    assert report_counts.jobs_deleted == 5
    assert files_under(media_root) == [kept]
    assert files_under(mail) == []
    assert outside.read_text() == "not the demo's"
    assert not current.is_symlink()  # not left pointing at the deleted release
    assert list(DemoFile.objects.values_list("path", flat=True)) == []


def test_cleanup__deleting_one_row_deletes_its_report(
    user, media_root, run_until_done, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = submit("report", {"title": "A", "rows": 5}, user=user)
        second = submit("report", {"title": "B", "rows": 5}, user=user)
    first, second = run_until_done(first), run_until_done(second)

    JobLog.objects.get(pk=first.pk).delete()

    assert files_under(media_root) == [media_root / second.result["path"]]
    assert list(DemoFile.objects.values_list("job_id", flat=True)) == [second.id]


# --- a job reads only its owner's files ----------------------------------------------------------------------------


@pytest.fixture
def bob(transactional_db):
    return make_user("bob")


def test_csv_stats__reads_only_its_owners_files(
    user, bob, client_for, run_until_done, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        imported = upload_contacts(client_for(user))
        report = submit("report", {"title": "A", "rows": 5}, user=user)
    report = run_until_done(report)
    for path in (imported.payload["file"], report.result["path"]):
        with django_capture_on_commit_callbacks(execute=True):
            theirs = submit("csv-stats", {"file": path}, user=bob)
            mine = submit("csv-stats", {"file": path}, user=user)
        theirs, mine = run_until_done(theirs), run_until_done(mine)

        assert theirs.status == "failed" and theirs.attempts == 1 and theirs.error_type == "PermanentError"
        assert theirs.error_message == (
            f"{path} is not one of your files: csv-stats reads only files you uploaded or your jobs wrote."
        )
        assert theirs.result is None and theirs.progress_percent == 0
        assert mine.status == "succeeded" and mine.result["rows"] > 0
    # Staff may read anyone's file.
    with django_capture_on_commit_callbacks(execute=True):
        staffs = submit("csv-stats", {"file": imported.payload["file"]}, user=make_user("root", is_staff=True))
    assert run_until_done(staffs).result["rows"] == 2


def test_contact_import__imports_only_its_owners_upload(
    user, bob, client_for, media_root, run_until_done, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        mine = upload_contacts(client_for(user), MANY_CONTACTS_CSV)
        theirs = submit("contact-import", {"file": mine.payload["file"]}, user=bob)
    theirs, mine = run_until_done(theirs), run_until_done(mine)

    assert theirs.status == "failed" and theirs.attempts == 1 and theirs.error_type == "PermanentError"
    assert theirs.error_message == (
        f"{mine.payload['file']} is not one of your files: "
        "contact-import reads only files you uploaded or your jobs wrote."
    )
    assert not Contact.objects.filter(owner=bob).exists() and theirs.result is None
    assert mine.status == "succeeded" and Contact.objects.filter(owner=user).count() == mine.result["imported"] > 10
