"""email-notification: one email per recipient through EMAIL_BACKEND, in batches over one connection each."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from jobs import submit
from jobs.exceptions import InvalidPayload
from jobs.models import JobLog
from project.demo.models import Contact, OutboxMessage
from tests.factories import make_user

from . import senders

pytestmark = pytest.mark.django_db(transaction=True)

RECIPIENTS = [f"user{n}@example.com" for n in range(7)]
MAIL = {"subject": "Launch", "body": "Friday, 9:00."}


def notify(user, run_until_done, capture, **payload) -> JobLog:
    """Notify the recipients, made the user's contacts first (a user writes only to their contacts)."""
    payload = {"recipients": RECIPIENTS, "subject": "Launch", "body": "Friday, 9:00.", "batch_size": 3, **payload}
    for address in {a.lower() for a in payload["recipients"]}:
        Contact.objects.get_or_create(owner=user, email=address)
    with capture(execute=True):
        job = submit("email-notification", payload, user=user)
    return run_until_done(job)


def test_email_notification__one_email_per_recipient_in_batches(
    user, mailoutbox, run_until_done, django_capture_on_commit_callbacks
):
    job = notify(user, run_until_done, django_capture_on_commit_callbacks)

    assert job.status == "succeeded"
    assert job.result == {"sent": 7, "alreadySent": 0, "failed": 0, "recipients": 7, "batches": 3}
    assert [m.to for m in mailoutbox] == [[address] for address in RECIPIENTS]
    assert {(m.subject, m.body, m.from_email) for m in mailoutbox} == {("Launch", "Friday, 9:00.", "demo@localhost")}
    assert OutboxMessage.objects.filter(job_id=job.id, channel="email").count() == 7
    assert job.progress_message == "Batch 3 of 3: 7 of 7 recipients"


def test_email_notification__goes_through_the_configured_backend(
    user, settings, tmp_path, run_until_done, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = tmp_path / "mail"
    job = notify(user, run_until_done, django_capture_on_commit_callbacks, batch_size=5)

    files = list((tmp_path / "mail").iterdir())
    assert job.result["batches"] == 2
    assert len(files) == 2  # the file backend writes one file per connection: one per batch
    assert sum(f.read_text().count("Subject: Launch") for f in files) == 7


def test_email_notification__refused_recipients_are_partial_results(
    user, settings, mailoutbox, run_until_done, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "project.demo.tests.senders.FlakyBackend"
    recipients = ["a@example.com", "refused@example.com", "b@example.com"]
    job = notify(user, run_until_done, django_capture_on_commit_callbacks, recipients=recipients)

    assert job.status == "succeeded"
    assert job.result["sent"] == 2 and job.result["failed"] == 1
    assert job.failed_items == [
        {"item": "refused@example.com", "error": "the mail server refused it: 550 no such user"}
    ]
    assert not OutboxMessage.objects.filter(recipient="refused@example.com").exists()


def test_email_notification__a_dropped_connection_is_retried_without_duplicates(
    user, settings, mailoutbox, run_until_done, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "project.demo.tests.senders.FlakyBackend"
    senders.drop_after[:] = [4]
    job = notify(user, run_until_done, django_capture_on_commit_callbacks)

    assert job.status == "succeeded" and job.attempts == 2
    assert job.result["sent"] == 3 and job.result["alreadySent"] == 4
    assert sorted(m.to[0] for m in mailoutbox) == sorted(RECIPIENTS)


def test_email_notification__wrong_credentials_fail_at_once(
    user, settings, run_until_done, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "project.demo.tests.senders.WrongPasswordBackend"
    job = notify(user, run_until_done, django_capture_on_commit_callbacks)

    assert job.status == "failed" and job.attempts == 1
    assert job.error_type == "SMTPAuthenticationError"


def test_email_notification__duplicates_are_sent_once(
    user, mailoutbox, run_until_done, django_capture_on_commit_callbacks
):
    job = notify(
        user, run_until_done, django_capture_on_commit_callbacks, recipients=["A@example.com", "a@example.com"]
    )

    assert job.result["recipients"] == 1 and len(mailoutbox) == 1


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"recipients": []}, "recipients", "Give at least one recipient."),
        ({"recipients": ["ok@example.com", "nope"]}, "recipients", "Enter a valid email address."),
        ({"recipients": ["x@example.com"] * 1001}, "recipients", "no more than 1000"),
        ({"subject": ""}, "subject", "may not be blank"),
        ({"batch_size": 0}, "batch_size", "greater than or equal to 1"),
    ],
)
def test_email_notification__bad_input_names_the_field(user, change, field, message):
    payload = {"recipients": RECIPIENTS, "subject": "Launch", "body": "Friday.", **change}
    with pytest.raises(InvalidPayload) as caught:
        submit("email-notification", payload, user=user)
    assert message in str(caught.value.errors[field])


def test_email_notification__type_limits():
    from jobs.registry import get

    assert get("email-notification").rate_limit == "10/s"


# --- whom a user may notify: their contacts and themselves (staff: anyone) ------------------------------------------


def test_email_notification__the_form_refuses_addresses_that_are_not_my_contacts(user, client_for):
    Contact.objects.create(owner=user, email="ada@example.com")
    Contact.objects.create(owner=make_user("bob"), email="bob@example.com")  # someone else's contact
    form = {"recipients": "ada@example.com, bob@example.com", "subject": "S", "body": "B", "batch_size": "20"}
    response = client_for(user).post("/jobs/start/email-notification/", form)

    assert response.status_code == 400
    assert "bob@example.com is not among your contacts: you may notify only your contacts and yourself." in (
        response.content.decode()
    )
    assert not JobLog.objects.exists()


def test_email_notification__the_job_writes_only_to_my_contacts_and_me_staff_to_anyone(
    user, mailoutbox, run_until_done, django_capture_on_commit_callbacks
):
    # Through submit() or the API the payload is valid (whose contacts they are is not the payload's to know):
    # the job refuses before sending anything, and is not retried.
    Contact.objects.create(owner=user, email="ada@example.com")
    client = APIClient()
    client.force_authenticate(user)
    with django_capture_on_commit_callbacks(execute=True):
        direct = submit("email-notification", {"recipients": ["ada@example.com", "x@example.com"], **MAIL}, user=user)
        answer = client.post(
            "/api/jobs/",
            {"type": "email-notification", "payload": {"recipients": [f"s{n}@example.com" for n in range(5)], **MAIL}},
            format="json",
        )
    assert answer.status_code == 202, answer.content
    via_api = JobLog.objects.get(pk=answer.json()["id"])

    for job, message in [
        (direct, "x@example.com is not among your contacts"),
        (via_api, "s0@example.com, s1@example.com, s2@example.com and 2 more are not among your contacts"),
    ]:
        job = run_until_done(job)
        assert job.status == "failed" and job.attempts == 1 and job.error_type == "PermanentError"
        assert job.error_message.startswith(message)
    assert mailoutbox == [] and not OutboxMessage.objects.exists()

    # Myself (my account's address, any case) and, for staff, anyone.
    user.email = "Me@Example.com"
    user.save()
    with django_capture_on_commit_callbacks(execute=True):
        mine = submit("email-notification", {"recipients": ["me@example.com", "ada@example.com"], **MAIL}, user=user)
        staffs = submit(
            "email-notification", {"recipients": ["anyone@example.org"], **MAIL}, user=make_user("root", is_staff=True)
        )
    assert run_until_done(mine).status == "succeeded" and run_until_done(staffs).status == "succeeded"
    assert sorted(m.to[0] for m in mailoutbox) == ["ada@example.com", "anyone@example.org", "me@example.com"]
