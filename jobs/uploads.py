"""Files for jobs to read: checked and stored (``POST /api/uploads/``), read by handlers, deleted with their row.

A payload names an upload by id, never by path. A handler reads it with ``ctx.open_upload(upload_id)``, which checks
that the upload belongs to the job's owner: a user cannot make their job read someone else's file by naming its id.
Jobs without an owner (submitted by code or a schedule) may read any upload. Retention deletes uploads older than
``JOBS["DEFAULT_RETENTION_DAYS"]`` (jobs.retention), and the file goes with its row however the row is deleted.
"""

from __future__ import annotations

import logging
import os
import uuid
from functools import partial
from typing import Any

from django.core.files import File
from django.core.files.storage import Storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from .conf import jobs_settings
from .exceptions import PermanentError, UploadNotFound, UploadRefused, UploadTooLarge, UploadTypeRefused
from .models import Upload

logger = logging.getLogger(__name__)

GENERIC_CONTENT_TYPE = "application/octet-stream"  # what a part without a Content-Type is


def declared_type(file: UploadedFile[Any]) -> str:
    """The client's Content-Type of the file, lowercased and without parameters (``; charset=...``)."""
    return (file.content_type or "").split(";")[0].strip().lower() or GENERIC_CONTENT_TYPE


def check(file: UploadedFile[Any]) -> None:
    """UploadRefused (or a subclass) unless ``file`` may be stored: its size, extension and declared type."""
    conf = jobs_settings()
    name = file.name or ""
    if file.size is not None and file.size > conf.MAX_UPLOAD_BYTES:
        raise UploadTooLarge(f"The file is larger than {conf.MAX_UPLOAD_BYTES} bytes (JOBS['MAX_UPLOAD_BYTES']).")
    if not file.size:
        raise UploadRefused("The file is empty.")
    extension = os.path.splitext(name)[1].lower()
    if extension not in conf.UPLOAD_EXTENSIONS:
        allowed = ", ".join(conf.UPLOAD_EXTENSIONS) or "none"
        raise UploadTypeRefused(f"{name or 'The file'} cannot be uploaded: allowed extensions are {allowed}.")
    content_type = declared_type(file)
    if content_type not in conf.UPLOAD_CONTENT_TYPES:
        raise UploadTypeRefused(f"{name} was sent as {content_type}, which cannot be uploaded here.")


def store(file: UploadedFile[Any], *, owner: Any) -> Upload:
    """Check ``file``, then save it under a random name in default storage as ``owner``'s; nothing kept if refused."""
    check(file)
    upload = Upload(
        name=(file.name or "")[:255], size=file.size or 0, content_type=declared_type(file)[:100], owner=owner
    )
    upload.file.save(file.name or "upload", file, save=False)
    try:
        upload.save()
    except BaseException:
        upload.file.delete(save=False)  # no row, no file
        raise
    return upload


def get_for(user: Any, upload_id: Any, *, see_all: bool) -> Upload:
    """The upload, if ``user`` owns it or may see everything (``see_all``); UploadNotFound otherwise, as if absent."""
    try:
        pk = uuid.UUID(str(upload_id))
    except ValueError:
        raise UploadNotFound() from None
    uploads = Upload.objects.all() if see_all else Upload.objects.filter(owner_id=getattr(user, "pk", None))
    found = uploads.filter(pk=pk).first()
    if found is None:
        raise UploadNotFound()
    return found


def open_for(owner_id: int | None, upload_id: Any) -> File[bytes]:
    """The upload's file, opened for binary reading, for a job owned by ``owner_id``.

    PermanentError (the job fails at once: trying again cannot help) if the id names no upload or another user's, or
    if its file is gone. Both cases read the same, so a job's error does not tell whether another user's id exists.
    """
    try:
        pk = uuid.UUID(str(upload_id))
    except ValueError:
        raise PermanentError(f"{upload_id!r} is not an upload id.") from None
    uploads = Upload.objects.all() if owner_id is None else Upload.objects.filter(owner_id=owner_id)
    upload = uploads.filter(pk=pk).first()
    if upload is None:
        raise PermanentError(
            f"Upload {pk} does not exist or is not yours: a job reads only uploads of the user who submitted it."
        )
    try:
        return upload.file.storage.open(upload.file.name or "", "rb")
    except FileNotFoundError:
        raise PermanentError(f"The file of upload {pk} is gone.") from None


def delete_stored_file(sender: type[Upload], instance: Upload, **kwargs: Any) -> None:
    """post_delete of Upload: delete its file once the deletion commits (a rollback keeps both)."""
    if instance.file.name:
        transaction.on_commit(partial(_delete, instance.file.storage, instance.file.name))


def _delete(storage: Storage, name: str) -> None:
    try:
        storage.delete(name)
    except OSError as exc:
        logger.warning("Could not delete %s of a deleted upload: %s", name, exc)
