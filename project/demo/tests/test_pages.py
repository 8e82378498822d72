"""The end-user pages: a form per job type, my jobs, my contacts, a deployed site; logged-in users only."""

from __future__ import annotations

import html
import re
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs import submit
from jobs.models import JobLog
from project.demo.models import Contact, OutboxMessage
from tests.factories import make_job, make_user

pytestmark = pytest.mark.django_db(transaction=True)

FORMS = ["deploy", "ai-generation", "contact-import", "bulk-message", "email-notification", "report"]


def started(response) -> JobLog:
    assert response.status_code == 302, response.content.decode()[:2000]
    match = re.fullmatch(r"/jobs/([0-9a-f-]{36})/", response["Location"])
    assert match, response["Location"]
    return JobLog.objects.get(pk=match.group(1))


@pytest.mark.parametrize("path", ["/", "/jobs/", "/contacts/", "/contacts/sample.csv"])
def test_pages__need_a_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_start_job__needs_a_login(client):
    response = client.post("/jobs/start/report/", {"title": "x", "rows": "1"})
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert not JobLog.objects.exists()


def test_home__has_a_form_per_job_type_and_names_the_local_model(user, client_for):
    page = client_for(user).get("/").content.decode()

    for type_name in FORMS:
        assert f'id="form-{type_name}"' in page
        assert f'action="/jobs/start/{type_name}/"' in page
    assert "Local demo model." in page and "no real AI" in page
    assert "rate 10/m" in page and "concurrency 3" in page  # deploy's limits shown on its card


def test_home__names_a_real_model_when_configured(user, client_for, settings):
    settings.AI_BASE_URL = "https://api.example.com/v1"
    settings.AI_MODEL = "gpt-4o-mini"
    page = client_for(user).get("/").content.decode()

    assert "Local demo model." not in page and "gpt-4o-mini" in page


DEPLOY_FORM = {
    "project": "my-site",
    "title": "Acme",
    "tagline": "",
    "theme": "docs",
    "pages": "About, Pricing , ,Contact",
    "accent_color": "#112233",
    "custom_domain": "",
    "run_deploy_script": "on",
}


def test_start_deploy__from_the_form(user, client_for):
    job = started(client_for(user).post("/jobs/start/deploy/", DEPLOY_FORM))

    assert job.owner == user and job.job_type == "deploy" and job.priority == "normal"
    assert job.payload["pages"] == ["About", "Pricing", "Contact"]
    assert job.payload["run_deploy_script"] is True and job.payload["theme"] == "docs"


def test_start_deploy__a_custom_domain_gets_high_priority(user, client_for):
    form = {**DEPLOY_FORM, "custom_domain": "www.acme.example"}
    form.pop("run_deploy_script")  # an unticked checkbox is not sent
    job = started(client_for(user).post("/jobs/start/deploy/", form))

    assert job.priority == "high" and job.payload["run_deploy_script"] is False


def test_start_deploy__bad_input_is_shown_next_to_the_fields(user, client_for):
    form = {**DEPLOY_FORM, "project": "no spaces please", "custom_domain": "nope"}
    response = client_for(user).post("/jobs/start/deploy/", form)

    assert response.status_code == 400
    page = response.content.decode()
    assert re.search(r'id="id_deploy_project"[^>]*aria-invalid="true"', page)
    assert "Enter a domain name like www.example.com." in page
    assert 'value="no spaces please"' in page  # what the user typed stays
    assert not JobLog.objects.exists()


def test_start_ai_generation__from_the_form(user, client_for):
    response = client_for(user).post(
        "/jobs/start/ai-generation/", {"prompt": "Tell me about queues", "sections": "2", "temperature": "0.3"}
    )
    job = started(response)

    assert job.payload == {"prompt": "Tell me about queues", "sections": 2, "temperature": 0.3}


def test_start_ai_generation__bad_input(user, client_for):
    response = client_for(user).post("/jobs/start/ai-generation/", {"prompt": "", "sections": "12", "temperature": ""})

    assert response.status_code == 400
    page = response.content.decode()
    assert "This field may not be blank." in page and "Ensure this value is less than or equal to 8." in page


def test_start_contact_import__stores_the_upload(user, client_for, media_root, run_until_done):
    client = client_for(user)
    sample = client.get("/contacts/sample.csv")
    assert sample["Content-Type"] == "text/csv"
    upload = SimpleUploadedFile("contacts.csv", sample.content, content_type="text/csv")
    job = started(client.post("/jobs/start/contact-import/", {"upload": upload, "skip_duplicates": "on"}))

    assert job.payload["update_existing"] is False and job.payload["skip_duplicates"] is True
    assert (media_root / job.payload["file"]).read_bytes() == sample.content
    job = run_until_done(job)
    assert job.status == "succeeded"
    assert job.result["imported"] == Contact.objects.filter(owner=user).count() > 30
    assert job.failed_items_count == 3 and job.result["skipped"] == 2  # the sample's bad rows and duplicates


def test_start_contact_import__without_a_file(user, client_for):
    response = client_for(user).post("/jobs/start/contact-import/", {"skip_duplicates": "on"})

    assert response.status_code == 400 and "Choose a CSV file." in response.content.decode()


def test_start_contact_import__a_file_too_large(user, client_for, settings):
    from project.demo import uploads

    upload = SimpleUploadedFile("big.csv", b"x" * (uploads.MAX_UPLOAD_BYTES + 1))
    response = client_for(user).post("/jobs/start/contact-import/", {"upload": upload})

    assert response.status_code == 400 and "larger than 10 MB" in response.content.decode()


def test_start_bulk_message__lists_my_contacts_and_sends_to_the_chosen(user, client_for):
    mine = Contact.objects.create(owner=user, name="Ada", email="ada@example.com")
    Contact.objects.create(owner=user, name="Grace", email="grace@example.com")
    Contact.objects.create(owner=make_user("bob"), name="Bob", email="bob@example.com")
    client = client_for(user)
    page = client.get("/").content.decode()
    assert "Ada · ada@example.com" in page and "Bob" not in page

    form = {"subject": "Hi", "template": "Hello {{name}}", "contact_ids": [str(mine.pk)], "messages_per_second": ""}
    job = started(client.post("/jobs/start/bulk-message/", form))
    assert job.payload["contact_ids"] == [mine.pk] and job.payload["all_contacts"] is False
    assert "messages_per_second" not in job.payload

    job = started(client.post("/jobs/start/bulk-message/", {**form, "all_contacts": "on"}))
    assert job.payload["all_contacts"] is True and job.payload["contact_ids"] == []


def test_start_bulk_message__bad_input(user, client_for):
    response = client_for(user).post("/jobs/start/bulk-message/", {"subject": "Hi", "template": "Hi {{age}}"})

    assert response.status_code == 400 and "Unknown variable {{age}}" in response.content.decode()
    response = client_for(user).post("/jobs/start/bulk-message/", {"subject": "Hi", "template": "Hi {{name}}"})
    assert response.status_code == 400 and "Select at least one contact, or all of them." in response.content.decode()


def test_start_email_notification__splits_the_recipients(user, client_for):
    for address in ("a@example.com", "b@example.com", "c@example.com"):
        Contact.objects.create(owner=user, email=address)
    form = {
        "recipients": "a@example.com, b@example.com\nc@example.com;",
        "subject": "S",
        "body": "B",
        "batch_size": "2",
    }
    job = started(client_for(user).post("/jobs/start/email-notification/", form))

    assert job.payload["recipients"] == ["a@example.com", "b@example.com", "c@example.com"]


def test_start_email_notification__names_the_bad_recipient(user, client_for):
    form = {"recipients": "a@example.com nope", "subject": "S", "body": "B", "batch_size": "2"}
    response = client_for(user).post("/jobs/start/email-notification/", form)

    assert response.status_code == 400
    assert "Item 2 (nope): Enter a valid email address." in response.content.decode()


def test_start_report__still_works(user, client_for):
    job = started(client_for(user).post("/jobs/start/report/", {"title": "T", "rows": "10"}))
    assert job.payload == {"title": "T", "rows": 10}


def test_start_job__unknown_type_is_404(user, client_for):
    assert client_for(user).post("/jobs/start/csv-stats/", {}).status_code == 404
    assert client_for(user).post("/jobs/start/nope/", {}).status_code == 404


def test_job_list__shows_my_jobs_with_filters(user, client_for):
    deploy = make_job(job_type="deploy", queue="deploy", owner=user, status="running", progress_percent=40)
    mail = make_job(job_type="email-notification", queue="email-notification", owner=user, status="succeeded")
    foreign = make_job(job_type="deploy", queue="deploy", owner=make_user("bob"))
    client = client_for(user)

    page = client.get("/jobs/").content.decode()
    assert f'data-job-id="{deploy.id}"' in page and f'data-job-id="{mail.id}"' in page
    assert str(foreign.id) not in page
    assert 'data-api="/api/jobs/?page_size=100"' in page

    page = client.get("/jobs/?type=deploy").content.decode()
    assert str(deploy.id) in page and str(mail.id) not in page
    assert "type=deploy" in page
    page = client.get("/jobs/?status=succeeded").content.decode()
    assert str(mail.id) in page and str(deploy.id) not in page


def job_row(page: str, job: JobLog) -> str:
    match = re.search(rf'<tr data-job-id="{job.id}".*?</tr>', page, re.DOTALL)
    assert match, f"no row for {job.id}"
    return match.group(0)


def test_job_list__a_finished_job_shows_its_outcome_not_its_last_stage(
    user, client_for, run_until_done, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        report = submit("report", {"title": "Numbers", "rows": 5}, user=user)
    report = run_until_done(report)
    with django_capture_on_commit_callbacks(execute=True):
        stats = submit("csv-stats", {"file": report.result["path"]}, user=user)
        missing = submit("csv-stats", {"file": f"uploads/{uuid.uuid4()}.csv"}, user=user)
    stats, missing = run_until_done(stats), run_until_done(missing)
    # The rows keep the last progress they reported; the page must not show it as if the job were still there.
    assert stats.status == "succeeded" and stats.progress_message == "Summarising"
    assert missing.status == "failed" and missing.error_type and "Traceback" in missing.traceback

    for path in ("/jobs/", "/"):
        page = client_for(user).get(path).content.decode()
        succeeded, failed = job_row(page, stats), job_row(page, missing)
        assert "Summarising" not in succeeded and "Done" in succeeded and "100%" in succeeded
        assert f"<strong>{missing.error_type}</strong>: {html.escape(missing.error_message[:60])}" in failed
        assert "Traceback" not in failed and 'class="job-error"' in failed and "<span>0%</span>" in failed


def test_contacts_page__lists_contacts_and_the_outbox(user, client_for):
    ada = Contact.objects.create(owner=user, name="Ada", email="ada@example.com")
    Contact.objects.create(owner=make_user("bob"), name="Bob", email="bob@example.com")
    job = make_job(job_type="bulk-message", queue="bulk-message", owner=user)
    OutboxMessage.objects.create(job_id=job.id, contact=ada, channel="email", recipient=ada.email, body="Hello Ada")

    page = client_for(user).get("/contacts/").content.decode()
    assert "ada@example.com" in page and "bob@example.com" not in page and "Hello Ada" in page


def test_deployed_site__served_to_its_owner_only(user, client_for, run_until_done, django_capture_on_commit_callbacks):
    payload = {"project": "acme", "title": "Acme", "pages": ["About"]}
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("deploy", payload, user=user)
    job = run_until_done(job)
    url = job.result["url"]
    assert url == f"/jobs/{job.id}/site/index.html"

    client = client_for(user)
    page = client.get(url)
    assert page.status_code == 200 and page["Content-Type"] == "text/html"
    assert b"Acme" in b"".join(page.streaming_content)
    page.close()
    style = client.get(f"/jobs/{job.id}/site/style.css")
    style.close()
    assert style["Content-Type"] == "text/css"
    assert client.get(f"/jobs/{job.id}/site/../../../../manage.py").status_code == 404
    assert client.get(f"/jobs/{job.id}/site/missing.html").status_code == 404
    assert client_for(make_user("bob")).get(url).status_code == 404

    listed = client.get("/jobs/").content.decode()
    assert f'href="{url}"' in listed


def test_cancel_and_retry__steer_my_job_and_refuse_the_wrong_state(user, client_for, redis_url):
    client = client_for(user)
    job = submit("report", {"rows": 10, "title": "Steer"}, user=user)

    response = client.post(f"/jobs/{job.id}/cancel/")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.id}/"
    job.refresh_from_db()
    assert job.status == "canceled"

    again = client.post(f"/jobs/{job.id}/cancel/", follow=True)
    assert "already canceled" in again.content.decode()  # a refusal is a message, nothing changes
    assert JobLog.objects.get(pk=job.pk).status == "canceled"

    client.post(f"/jobs/{job.id}/retry/")
    assert JobLog.objects.get(pk=job.pk).status == "queued"


def test_cancel_and_retry__someone_elses_job_is_404_and_get_is_refused(user, client_for, redis_url):
    theirs = submit("report", {"rows": 10, "title": "Theirs"}, user=make_user("mallory"))
    client = client_for(user)
    assert client.post(f"/jobs/{theirs.id}/cancel/").status_code == 404
    assert client.post(f"/jobs/{theirs.id}/retry/").status_code == 404
    assert client.get(f"/jobs/{theirs.id}/cancel/").status_code == 405
    assert JobLog.objects.get(pk=theirs.pk).status == "queued"
