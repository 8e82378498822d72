"""bulk-message: a template sent to chosen contacts at a steady pace, each message's outcome tracked."""

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


@pytest.fixture
def people(user):
    return [
        Contact.objects.create(owner=user, name="Ada Lovelace", email="ada@example.com"),
        Contact.objects.create(owner=user, name="Grace Hopper", email="grace@example.com", phone="+15550100000"),
        Contact.objects.create(owner=user, name="Linus", phone="+358401234567"),
    ]


def send(user, run_until_done, capture, **payload) -> JobLog:
    payload = {
        "template": "Hello {{first_name}}!",
        "subject": "News for {{name}}",
        "messages_per_second": 50,
        **payload,
    }
    with capture(execute=True):
        job = submit("bulk-message", payload, user=user)
    return run_until_done(job)


def test_bulk_message__emails_and_outbox(user, people, mailoutbox, run_until_done, django_capture_on_commit_callbacks):
    job = send(user, run_until_done, django_capture_on_commit_callbacks, all_contacts=True)

    assert job.status == "succeeded"
    assert job.result["sent"] == 3 and job.result["failed"] == 0 and job.result["total"] == 3
    assert sorted((m.to[0], m.subject, m.body) for m in mailoutbox) == [
        ("ada@example.com", "News for Ada Lovelace", "Hello Ada!"),
        ("grace@example.com", "News for Grace Hopper", "Hello Grace!"),
    ]
    outbox = {m.recipient: (m.channel, m.body, m.contact_id) for m in OutboxMessage.objects.all()}
    assert outbox == {
        "ada@example.com": ("email", "Hello Ada!", people[0].pk),
        "grace@example.com": ("email", "Hello Grace!", people[1].pk),
        "+358401234567": ("sms", "Hello Linus!", people[2].pk),
    }


def test_bulk_message__only_the_selected_contacts(
    user, people, mailoutbox, run_until_done, django_capture_on_commit_callbacks
):
    job = send(user, run_until_done, django_capture_on_commit_callbacks, contact_ids=[people[1].pk])

    assert job.result["total"] == 1 and [m.to for m in mailoutbox] == [["grace@example.com"]]


def test_bulk_message__messages_that_cannot_be_made_are_partial_results(
    user, people, mailoutbox, run_until_done, django_capture_on_commit_callbacks
):
    someone_elses = Contact.objects.create(owner=make_user("bob"), name="Bob", email="bob@example.com")
    ids = [p.pk for p in people] + [someone_elses.pk, 99999]
    job = send(
        user, run_until_done, django_capture_on_commit_callbacks, contact_ids=ids, template="Your login: {{email}}"
    )

    assert job.status == "succeeded"
    assert job.result["sent"] == 2 and job.result["failed"] == 1
    assert job.failed_items_count == 3
    assert job.failed_items == [
        {"item": f"contact {someone_elses.pk}", "error": "no such contact"},
        {"item": "contact 99999", "error": "no such contact"},
        {"item": f"contact {people[2].pk} (+358401234567)", "error": "the contact has no email for {{email}}"},
    ]
    assert len(mailoutbox) == 2


def test_bulk_message__keeps_its_pace(user, people, settings, run_until_done, django_capture_on_commit_callbacks):
    settings.DEMO_MESSAGES_PER_SECOND = 12
    for n in range(10):
        Contact.objects.create(owner=user, name=f"Extra {n}", phone=f"+4915112345{n:03d}")
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("bulk-message", {"template": "Hi {{name}}", "all_contacts": True}, user=user)
    job = run_until_done(job)

    # 13 messages at 12 per second: the 13th leaves a full second after the first.
    assert job.result["total"] == 13 and job.result["messagesPerSecond"] == 12
    assert 1.0 <= job.result["seconds"] < 3.0
    sent_at = sorted(OutboxMessage.objects.values_list("created_at", flat=True))
    assert (sent_at[-1] - sent_at[0]).total_seconds() >= 0.95


def test_bulk_message__pluggable_sender_failures_and_a_dropped_connection(
    user, people, settings, mailoutbox, run_until_done, django_capture_on_commit_callbacks
):
    settings.DEMO_MESSAGE_SENDER = "project.demo.tests.senders.FlakySender"
    people[2].email = "bounce@example.com"
    people[2].save()
    senders.drop_after[:] = [1]  # the connection drops at the second message of the first attempt
    job = send(user, run_until_done, django_capture_on_commit_callbacks, all_contacts=True)

    assert job.status == "succeeded"
    assert job.attempts == 2
    assert job.events.get(kind="retry_scheduled").data["error_type"] == "SMTPServerDisconnected"
    # The second attempt skips whom the first reached: nobody gets the message twice.
    assert job.result == {**job.result, "sent": 1, "alreadySent": 1, "failed": 1}
    assert sorted(m.to[0] for m in mailoutbox) == ["ada@example.com", "grace@example.com"]
    assert {
        "item": f"contact {people[2].pk} (bounce@example.com)",
        "error": "mailbox does not exist",
    } in job.failed_items


def test_bulk_message__wrong_mail_credentials_fail_at_once(
    user, people, settings, run_until_done, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "project.demo.tests.senders.WrongPasswordBackend"
    job = send(user, run_until_done, django_capture_on_commit_callbacks, all_contacts=True)

    assert job.status == "failed" and job.attempts == 1 and job.error_type == "SMTPAuthenticationError"


def test_bulk_message__a_sender_setting_that_names_no_sender_fails(
    user, people, settings, run_until_done, django_capture_on_commit_callbacks
):
    settings.DEMO_MESSAGE_SENDER = "project.demo.models.Contact"
    job = send(user, run_until_done, django_capture_on_commit_callbacks, all_contacts=True)

    assert job.status == "failed" and job.error_type == "TypeError"
    assert "DEMO_MESSAGE_SENDER must name a MessageSender subclass" in job.error_message


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"template": "Hi {{age}}", "all_contacts": True}, "template", "Unknown variable {{age}}"),
        ({"template": "Hi", "subject": "{{nam}}", "all_contacts": True}, "subject", "Unknown variable {{nam}}"),
        ({"template": "Hi"}, "contact_ids", "Select at least one contact"),
        ({"template": "Hi", "contact_ids": ["x"]}, "contact_ids", "valid integer"),
        ({"template": "Hi", "all_contacts": True, "messages_per_second": 0}, "messages_per_second", "greater than"),
        ({"template": "", "all_contacts": True}, "template", "blank"),
    ],
)
def test_bulk_message__bad_input_names_the_field(user, payload, field, message):
    with pytest.raises(InvalidPayload) as caught:
        submit("bulk-message", payload, user=user)
    assert message in str(caught.value.errors[field])


# --- one slot, so a bounded job: at most 2,000 contacts at 10 messages per second or faster ------------------------


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"messages_per_second": 0.5}, "messages_per_second", "greater than or equal to 10"),
        ({"messages_per_second": 9.9}, "messages_per_second", "greater than or equal to 10"),
        ({"all_contacts": False, "contact_ids": list(range(1, 2002))}, "contact_ids", "no more than 2000"),
    ],
)
def test_bulk_message__a_job_that_would_hold_the_slot_too_long_is_refused(user, client_for, change, field, message):
    payload = {"template": "Hi", "all_contacts": True, **change}
    with pytest.raises(InvalidPayload) as caught:
        submit("bulk-message", payload, user=user)
    assert message in str(caught.value.errors[field])

    api = APIClient()
    api.force_authenticate(user)
    answer = api.post("/api/jobs/", {"type": "bulk-message", "payload": payload}, format="json")
    assert answer.status_code == 400 and message in str(answer.json()["payload"][field])
    assert not JobLog.objects.exists()


def test_bulk_message__the_form_refuses_a_pace_below_the_floor(user, people, client_for):
    form = {"subject": "Hi", "template": "Hello", "all_contacts": "on", "messages_per_second": "1"}
    response = client_for(user).post("/jobs/start/bulk-message/", form)

    assert response.status_code == 400
    assert "Ensure this value is greater than or equal to 10.0." in response.content.decode()
    assert 'min="10"' in client_for(user).get("/").content.decode()
    assert not JobLog.objects.exists()


def test_bulk_message__more_contacts_than_one_job_sends_fails_at_once(
    user, mailoutbox, run_until_done, django_capture_on_commit_callbacks
):
    Contact.objects.bulk_create(Contact(owner=user, email=f"c{n}@example.com") for n in range(2001))
    job = send(user, run_until_done, django_capture_on_commit_callbacks, all_contacts=True)

    assert job.status == "failed" and job.attempts == 1 and job.error_type == "PermanentError"
    assert job.error_message == "You have 2001 contacts; one bulk-message job sends to at most 2000: choose some."
    assert mailoutbox == [] and not OutboxMessage.objects.exists()
