"""email-notification: one email per recipient through EMAIL_BACKEND, in batches over one connection each."""

from __future__ import annotations

import pytest

from jobs import submit
from jobs.exceptions import InvalidPayload
from jobs.models import JobLog
from project.demo.models import Contact, OutboxMessage

from . import senders

pytestmark = pytest.mark.django_db(transaction=True)

RECIPIENTS = [f"user{n}@example.com" for n in range(7)]


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
