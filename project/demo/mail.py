"""The demo's mail backend: Django's file backend, with the sending job's id at the start of each file's name.

Without the id nothing ties a file in var/mail/ to the job that wrote it, and deleting the job could not delete its
mail (files.py). Any other EMAIL_BACKEND (SMTP in production) is used as it is.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.mail import get_connection
from django.core.mail.backends import filebased
from django.utils.module_loading import import_string

JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class JobFileEmailBackend(filebased.EmailBackend):
    """Writes each connection's messages to ``EMAIL_FILE_PATH/<job id>-<timestamp>-<n>.log``."""

    def __init__(self, *args: Any, job_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Only a job id goes into a file name: nothing a payload chose can reach the path.
        self.job_id = job_id if job_id and JOB_ID.match(job_id) else None

    # Django's own hook for the file name (private, unchanged since Django 1.x; the stubs leave it out).
    def _get_filename(self) -> str:
        if self._fname is None and self.job_id:  # type: ignore[has-type]
            timestamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            self._fname = os.path.join(self.file_path, f"{self.job_id}-{timestamp}-{abs(id(self))}.log")
        return str(super()._get_filename())  # type: ignore[misc]


def job_connection(job_id: str) -> Any:
    """A connection of EMAIL_BACKEND for one job's messages; the demo's file backend names its files after it."""
    backend = import_string(settings.EMAIL_BACKEND)
    if isinstance(backend, type) and issubclass(backend, JobFileEmailBackend):
        return get_connection(job_id=job_id)
    return get_connection()  # another backend may not accept the extra argument


def job_mail_files(job_id: str) -> list[Path]:
    """The files the demo's file backend wrote for this job (none for another backend)."""
    folder = getattr(settings, "EMAIL_FILE_PATH", None)
    if not folder or not JOB_ID.match(job_id):
        return []
    return sorted(Path(folder).glob(f"{job_id}-*.log"))
