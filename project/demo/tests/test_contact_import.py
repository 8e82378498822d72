"""contact-import: CSV rows validated, de-duplicated and inserted in batches; bad rows are partial results."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from jobs import submit
from jobs.exceptions import InvalidPayload
from jobs.models import JobLog
from project.demo.contacts import ContactImporter, InvalidRow, normalize_phone, sample_rows
from project.demo.models import Contact, DemoFile
from tests.factories import make_user

from .support import RecordingContext

pytestmark = pytest.mark.django_db(transaction=True)


def upload(rows: list[list[str]] | str, encoding: str = "utf-8", *, owner: Any = None) -> str:
    """A stored upload, as the contact-import form stores it: the file, and the record of whose it is."""
    name = f"uploads/{uuid.uuid4()}.csv"
    path = Path(settings.MEDIA_ROOT) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(rows, str):
        path.write_bytes(rows.encode(encoding))
    else:
        with path.open("w", newline="", encoding=encoding) as handle:
            csv.writer(handle).writerows(rows)
    DemoFile.objects.create(path=name, owner=owner)
    return name


def run_import(user, run_until_done, capture, rows, **options) -> JobLog:
    with capture(execute=True):
        job = submit("contact-import", {"file": upload(rows, owner=user), **options}, user=user)
    return run_until_done(job)


ROWS = [
    ["Name", "E-mail", "Phone"],
    ["Ada Lovelace", "Ada@Example.com", "+44 20 7946 0000"],  # line 2
    ["Grace Hopper", "", "(555) 010-9999"],  # line 3: phone only, 10 digits
    ["Linus", "linus@example", ""],  # line 4: bad email
    ["Margaret", "margaret@example.com", "12345"],  # line 5: bad phone
    ["Nobody", "", ""],  # line 6: neither
    ["Ada again", "ada@example.com", ""],  # line 7: duplicate email of line 2
    ["Alan Turing", "alan@example.com", "0044 161 496 0000"],  # line 8: 00 prefix
]


def test_contact_import__imports_valid_rows_and_lists_the_others(
    user, run_until_done, django_capture_on_commit_callbacks
):
    job = run_import(user, run_until_done, django_capture_on_commit_callbacks, ROWS)

    assert job.status == "succeeded"
    assert job.result == {"rows": 7, "total": 7, "imported": 3, "updated": 0, "skipped": 1, "failed": 3}
    contacts = {c.name: (c.email, c.phone) for c in Contact.objects.filter(owner=user)}
    assert contacts == {
        "Ada Lovelace": ("ada@example.com", "+442079460000"),
        "Grace Hopper": ("", "5550109999"),
        "Alan Turing": ("alan@example.com", "+441614960000"),
    }
    assert job.failed_items_count == 3
    assert job.failed_items == [
        {"item": "row 4", "error": "invalid email 'linus@example'"},
        {"item": "row 5", "error": "invalid phone '12345': use 10 to 15 digits, optionally starting with +country"},
        {"item": "row 6", "error": "no email and no phone: a contact needs at least one"},
    ]
    assert all(c.source_job_id == job.id for c in Contact.objects.all())


def test_contact_import__duplicates_fail_when_not_skipped(user, run_until_done, django_capture_on_commit_callbacks):
    Contact.objects.create(owner=user, name="Alan", email="alan@example.com")
    job = run_import(user, run_until_done, django_capture_on_commit_callbacks, ROWS, skip_duplicates=False)

    assert job.status == "succeeded"
    assert job.result["skipped"] == 0 and job.result["imported"] == 2 and job.result["failed"] == 5
    errors = {item["item"]: item["error"] for item in job.failed_items}
    assert errors["row 7"] == "duplicate email of row 2"
    assert errors["row 8"] == "a contact with this email already exists"


def test_contact_import__skips_existing_contacts_by_default(user, run_until_done, django_capture_on_commit_callbacks):
    Contact.objects.create(owner=user, name="Old Grace", phone="5550109999")
    job = run_import(user, run_until_done, django_capture_on_commit_callbacks, ROWS)

    assert job.result["imported"] == 2 and job.result["skipped"] == 2
    assert Contact.objects.get(phone="5550109999").name == "Old Grace"


def test_contact_import__updates_existing_contacts_when_asked(user, run_until_done, django_capture_on_commit_callbacks):
    grace = Contact.objects.create(owner=user, name="Old Grace", phone="5550109999")
    other_owner = Contact.objects.create(owner=make_user("bob"), name="Not mine", email="ada@example.com")
    job = run_import(user, run_until_done, django_capture_on_commit_callbacks, ROWS, update_existing=True)

    assert job.result["imported"] == 2 and job.result["updated"] == 1
    grace.refresh_from_db()
    assert grace.name == "Grace Hopper"
    other_owner.refresh_from_db()
    assert other_owner.name == "Not mine"  # de-duplication is per owner


def test_contact_import__a_row_matching_two_contacts_fails(user, run_until_done, django_capture_on_commit_callbacks):
    first = Contact.objects.create(owner=user, email="ada@example.com")
    second = Contact.objects.create(owner=user, phone="+442079460000")
    job = run_import(user, run_until_done, django_capture_on_commit_callbacks, ROWS[:2], update_existing=True)

    assert job.failed_items == [
        {"item": "row 2", "error": f"email matches contact {first.pk} but phone matches contact {second.pk}"}
    ]


def test_contact_import__inserts_in_batches_of_100_with_progress_per_batch(user):
    from project.demo.job_types import contact_import

    ctx = RecordingContext(owner_id=user.pk)
    rows = sample_rows(250)
    result = contact_import(ctx, {"file": upload(rows, owner=user), "update_existing": False, "skip_duplicates": True})

    assert result["imported"] == 250 and Contact.objects.count() == 250
    batches = [message for _percent, message, stage in ctx.calls if stage == "import"][1:]
    assert [message.split(":")[0] for message in batches] == ["100 of 250 rows", "200 of 250 rows", "250 of 250 rows"]


def test_contact_import__a_retry_counts_its_own_earlier_inserts(user):
    job_id = str(uuid.uuid4())
    failures: list[tuple[str, str]] = []
    batch = [(2, {"name": "Ada", "email": "ada@example.com", "phone": ""})]
    for _attempt in range(2):
        importer = ContactImporter(
            owner_id=user.pk,
            job_id=job_id,
            update_existing=False,
            skip_duplicates=False,
            item_failed=lambda item, error: failures.append((item, error)),
        )
        importer.import_batch(batch)
        assert importer.counts.as_dict() == {"rows": 1, "imported": 1, "updated": 0, "skipped": 0, "failed": 0}
    assert Contact.objects.count() == 1 and failures == []


@pytest.mark.parametrize(
    ("content", "encoding", "message"),
    [
        ("first,last\nAda,Lovelace\n", "utf-8", "The header row needs an email or a phone column"),
        ("", "utf-8", "The file is empty."),
        ("name,email\nJosé,jose@example.com\n", "latin-1", "The file is not UTF-8 text"),
    ],
)
def test_contact_import__an_unusable_file_fails_at_once(
    user, run_until_done, django_capture_on_commit_callbacks, content, encoding, message
):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("contact-import", {"file": upload(content, encoding, owner=user)}, user=user)
    job = run_until_done(job)

    assert job.status == "failed" and job.attempts == 1
    assert job.error_type == "PermanentError" and job.error_message.startswith(message)


def test_contact_import__semicolons_and_a_bom_are_understood(user, run_until_done, django_capture_on_commit_callbacks):
    content = "\ufeffname;email;phone\nAda;ada@example.com;+33 1 23 45 67 89\n"
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("contact-import", {"file": upload(content, owner=user)}, user=user)
    job = run_until_done(job)

    assert job.result["imported"] == 1
    assert Contact.objects.get().phone == "+33123456789"


def test_contact_import__needs_an_owner(run_until_done, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("contact-import", {"file": upload(ROWS)})
    job = run_until_done(job)

    assert job.status == "failed" and job.error_message == "contact-import needs a user to own the contacts."


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"file": "../../etc/passwd"}, "Not an uploaded CSV file."),
        ({"file": f"uploads/{uuid.uuid4()}.csv"}, "No uploaded file with this name."),
    ],
)
def test_contact_import__bad_input_names_the_field(user, payload, message):
    with pytest.raises(InvalidPayload) as caught:
        submit("contact-import", payload, user=user)
    assert caught.value.errors == {"file": [message]}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "Give the id of a file sent to POST /api/uploads/."),
        ({"upload": str(uuid.uuid4()), "file": "uploads/x.csv"}, "Give upload or file, not both."),
        ({"upload": "contacts.csv"}, "Must be a valid UUID."),
    ],
)
def test_contact_import__names_its_file_once(user, payload, message):
    if "file" in payload:
        payload["file"] = upload(ROWS, owner=user)
    with pytest.raises(InvalidPayload) as caught:
        submit("contact-import", payload, user=user)
    assert caught.value.errors == {"upload": [message]}
    assert not JobLog.objects.exists()


@pytest.mark.parametrize(
    ("raw", "phone"),
    [
        ("+1 (415) 555-0100", "+14155550100"),
        ("020 7946 0000", "02079460000"),
        ("0044 20 7946 0000", "+442079460000"),
        ("123456789012345", "123456789012345"),
    ],
)
def test_normalize_phone__accepts_10_to_15_digits(raw, phone):
    assert normalize_phone(raw) == phone


@pytest.mark.parametrize("raw", ["555-0199", "1234567890123456", "+12 34", "phone", "+1 415 555 01OO", "++14155550100"])
def test_normalize_phone__refuses_the_rest(raw):
    with pytest.raises(InvalidRow):
        normalize_phone(raw)
