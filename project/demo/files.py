"""The demo's files on disk: who may read a job's input file, and deleting a job's files with its JobLog row.

Uploads (``uploads/<uuid>.csv``) and reports (``reports/<job id>.csv``) are recorded as ``DemoFile`` rows with their
owner and the job they belong to. A job reads a file only if its owner owns it (staff, and jobs no user submitted,
may read any). When a JobLog row is deleted (retention's ``jobs_cleanup``, the admin, a deleted user), its files
go too: the recorded ones, a report's file, a deploy's release folder and the mail files of a job that sent mail.
Nothing outside MEDIA_ROOT and EMAIL_FILE_PATH is ever deleted.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework import serializers

from jobs import PermanentError
from jobs.models import JobLog

from . import mail, sitegen
from .models import DemoFile

logger = logging.getLogger(__name__)

MAIL_TYPES = frozenset({"email-notification", "bulk-message"})
SLUG = re.compile(r"[-a-zA-Z0-9_]+")  # a deploy's project, as its payload validated it


def record(relative: str, *, owner_id: int | None, job_id: str | None) -> None:
    """Remember who owns the file at ``relative`` (under MEDIA_ROOT) and which job it belongs to."""
    DemoFile.objects.update_or_create(path=relative, defaults={"owner_id": owner_id, "job_id": job_id})


def is_staff(user_id: int | None) -> bool:
    return user_id is not None and get_user_model().objects.filter(pk=user_id, is_staff=True).exists()


def check_readable(relative: str, owner_id: int | None, job_type: str) -> None:
    """PermanentError unless a job of ``owner_id`` may read the file: its owner's own file, or staff's job.

    A job without an owner was submitted by code or a schedule, not through the API or a form (both need a login),
    so it is trusted like staff.
    """
    if owner_id is None or is_staff(owner_id):
        return
    if not DemoFile.objects.filter(path=relative, owner_id=owner_id).exists():
        raise PermanentError(
            f"{relative} is not one of your files: {job_type} reads only files you uploaded or your jobs wrote."
        )


def one_input(attrs: dict[str, Any]) -> dict[str, Any]:
    """A payload's validation: it names its input file once, by ``upload`` or by ``file``."""
    if "upload" in attrs and "file" in attrs:
        raise serializers.ValidationError({"upload": ["Give upload or file, not both."]})
    if "upload" not in attrs and "file" not in attrs:
        raise serializers.ValidationError({"upload": ["Give the id of a file sent to POST /api/uploads/."]})
    return attrs


def input_opener(ctx: Any, payload: dict[str, Any], job_type: str) -> Callable[[], IO[bytes]]:
    """How a job opens the file its payload names, checked for the job's owner: ``upload``, an id from the API's
    ``POST /api/uploads/`` (the jobs app checks it: ``ctx.open_upload``), or ``file``, a path the demo stored (checked
    here). Both open for binary reading."""
    if payload.get("upload"):
        upload_id = payload["upload"]
        ctx.open_upload(upload_id).close()  # refused now, before the job reports anything, if it is not theirs
        return lambda: ctx.open_upload(upload_id)
    check_readable(payload["file"], ctx.owner_id, job_type)
    path = Path(settings.MEDIA_ROOT) / payload["file"]
    return lambda: path.open("rb")


# --- deleting a job's files ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeletedJob:
    """What a deleted JobLog row said about its files: read before the row is gone."""

    job_id: str
    job_type: str
    owner_id: int | None
    payload: dict[str, Any]


def on_job_deleted(sender: type[JobLog], instance: JobLog, **kwargs: Any) -> None:
    """post_delete of JobLog: delete the job's files once the deletion commits (a rollback keeps both)."""
    job = DeletedJob(
        job_id=str(instance.pk),
        job_type=instance.job_type,
        owner_id=instance.owner_id,
        payload=dict(instance.payload) if isinstance(instance.payload, dict) else {},
    )
    transaction.on_commit(lambda: delete_job_files(job))


def delete_job_files(job: DeletedJob) -> None:
    """Delete every file the job owned; a file that cannot be deleted is logged, the others still go."""
    media = Path(settings.MEDIA_ROOT)
    paths = [media / path for path in DemoFile.objects.filter(job_id=job.job_id).values_list("path", flat=True)]
    if job.job_type == "report":
        # Also when the job died before recording its file, or left a half-written one.
        paths += [media / "reports" / f"{job.job_id}.csv", media / "reports" / f"{job.job_id}.csv.part"]
    release = _release(job)
    if release is not None:
        paths.append(release)
    if job.job_type in MAIL_TYPES:
        paths += mail.job_mail_files(job.job_id)
    for path in paths:
        _remove(path)
    if release is not None:
        _drop_dangling_current(release.parent.parent / "current")
    DemoFile.objects.filter(job_id=job.job_id).delete()


def _release(job: DeletedJob) -> Path | None:
    """A deploy's release folder (also a failed deploy's, which has no result to name it)."""
    project = job.payload.get("project")
    if job.job_type != "deploy" or not isinstance(project, str) or not SLUG.fullmatch(project):
        return None
    return sitegen.release_dir(job.owner_id, project, job.job_id)


def _roots() -> list[Path]:
    """The directories the demo writes to, and so may delete from."""
    roots = [Path(settings.MEDIA_ROOT)]
    mail_folder = getattr(settings, "EMAIL_FILE_PATH", None)
    if mail_folder:
        roots.append(Path(mail_folder))
    return [root.resolve() for root in roots]


def _inside_roots(path: Path) -> bool:
    # The parent resolved (a symlinked folder on the way cannot lead outside), the last part as it is: a symlink
    # there is removed, never followed.
    where = path.parent.resolve() / path.name
    return any(where != root and where.is_relative_to(root) for root in _roots())


def _remove(path: Path) -> None:
    if not _inside_roots(path):
        logger.warning("Not deleting %s: it is outside the demo's media and mail folders.", path)
        return
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("Could not delete %s of a deleted job: %s", path, exc)


def _drop_dangling_current(link: Path) -> None:
    """The site's ``current`` link, if it pointed at the release just deleted: no link beats a broken one."""
    if link.is_symlink() and not link.exists() and _inside_roots(link):
        link.unlink(missing_ok=True)
