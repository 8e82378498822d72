"""The contact-import form's upload: checked before anything is written, then stored under MEDIA_ROOT/uploads/.

A file that is too big, not named .csv, sent as another type, binary, not UTF-8, or without an email or phone
column is refused with the reason next to the input, and nothing reaches the disk. A stored file is recorded as its
uploader's (files.py) and deleted with the job it was uploaded for, or at once if that job is not created.
"""

from __future__ import annotations

import codecs
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from jobs.exceptions import InvalidPayload

from . import contacts, files
from .models import DemoFile

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# What browsers and spreadsheets send for a .csv file (Windows: the Excel type; some: none or a generic one).
CSV_CONTENT_TYPES = frozenset(
    {
        "",
        "text/csv",
        "application/csv",
        "text/x-csv",
        "text/plain",
        "application/vnd.ms-excel",
        "application/octet-stream",
    }
)


def check_contact_csv(upload: UploadedFile[Any] | None) -> str | None:
    """Why ``upload`` cannot be a contact CSV, or None if it can; reads only its first few kilobytes."""
    if upload is None:
        return "Choose a CSV file."
    name = upload.name or ""
    if not name.lower().endswith(".csv"):
        return f"{name or 'The file'} is not a .csv file."
    content_type = (upload.content_type or "").split(";")[0].strip().lower()
    if content_type not in CSV_CONTENT_TYPES:
        return f"{name} was sent as {content_type}, not as CSV text."
    if not upload.size:
        return "The file is empty."
    if upload.size > MAX_UPLOAD_BYTES:
        return f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB."
    upload.seek(0)
    head = upload.read(contacts.SAMPLE_CHARS)
    upload.seek(0)
    if b"\0" in head:
        return f"{name} is a binary file, not CSV text."
    try:
        # final=False: the sample may end inside a character.
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        return contacts.NOT_UTF8
    try:
        contacts.read_header(text)
    except contacts.UnusableFile as exc:
        return str(exc)
    return None


def store_contact_csv(upload: UploadedFile[Any] | None, input_name: str, owner_id: int | None) -> str:
    """Check the upload, then save it as ``uploads/<uuid>.csv`` owned by ``owner_id``; InvalidPayload if unusable."""
    problem = check_contact_csv(upload)
    if problem or upload is None:
        raise InvalidPayload({input_name: [problem or "Choose a CSV file."]})
    relative = f"uploads/{uuid.uuid4()}.csv"
    target = Path(settings.MEDIA_ROOT) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as handle:
        for chunk in upload.chunks():
            handle.write(chunk)
    files.record(relative, owner_id=owner_id, job_id=None)
    return relative


def claim(relative: str, job_id: str) -> None:
    """The stored upload belongs to this job from now on: deleting the job deletes it."""
    DemoFile.objects.filter(path=relative, job_id=None).update(job_id=job_id)


def discard(relative: str) -> None:
    """Delete an upload whose job was not created (the submission was refused)."""
    (Path(settings.MEDIA_ROOT) / relative).unlink(missing_ok=True)
    DemoFile.objects.filter(path=relative, job_id=None).delete()
