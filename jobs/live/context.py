"""JobContext: what a handler talks to. Progress goes to the JobLog row, coalesced, and to live listeners."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.core.files import File
from django.db import connections
from django.utils import timezone

from ..conf import jobs_settings
from ..models import JobLog, JobStatus
from ..types import FailedItem, ProgressFrame
from ..uploads import open_for
from .publish import publish


class JobContext:
    """Given to every handler: progress, cancellation and per-item failures of one attempt."""

    def __init__(self, job: JobLog, attempt: int) -> None:
        self.job_id = str(job.id)
        self.attempt = attempt
        self.job_type = job.job_type
        self.owner_id = job.owner_id
        self.percent = job.progress_percent
        self.message = job.progress_message
        self.stage = job.progress_stage
        self.data: dict[str, Any] = dict(job.progress_data or {})
        self.failed_items: list[FailedItem] = list(job.failed_items or [])
        self.failed_items_count = job.failed_items_count
        self._settings = jobs_settings()
        self._dirty = False  # changes not yet written to the row
        self._unpublished = False  # changes not yet sent to live listeners
        self._last_write = 0.0
        self._last_publish = 0.0
        self._canceled = threading.Event()
        self._write_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    # The handler's API -------------------------------------------------------------------------

    def progress(
        self,
        percent: float | None = None,
        message: str | None = None,
        *,
        stage: str | None = None,
        data: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        """Report progress; extra keywords (current=, total=) land in ``data``. Cheap to call in a tight loop."""
        if percent is not None:
            self.percent = max(0, min(100, int(percent)))
        if message is not None:
            self.message = str(message)[:500]
        if stage is not None:
            self.stage = str(stage)[:100]
        if data is not None or extra:
            self.data = {**self.data, **(data or {}), **extra}
        self._changed()

    def _changed(self) -> None:
        self._dirty = self._unpublished = True
        now = time.monotonic()
        if now - self._last_publish >= self._settings.PROGRESS_PUBLISH_INTERVAL:
            self.publish_pending()
        if now - self._last_write >= self._settings.PROGRESS_MIN_INTERVAL:
            self.flush()

    def is_canceled(self) -> bool:
        """True once somebody asked to cancel this job; the handler should return soon after."""
        return self._canceled.is_set()

    def item_failed(self, item: Any, error: Any) -> None:
        """Record one failed item (a CSV row, a recipient) while the job goes on: a partial result."""
        self.failed_items_count += 1
        if len(self.failed_items) < self._settings.MAX_FAILED_ITEMS:
            self.failed_items.append({"item": str(item)[:500], "error": str(error)[:1000]})
        self._dirty = True

    def open_upload(self, upload_id: Any) -> File[bytes]:
        """An upload's file (``POST /api/uploads/``) opened for binary reading; close it when done.

        Only an upload of this job's owner (any, for a job without one); PermanentError otherwise, or if it is gone.
        """
        return open_for(self.owner_id, upload_id)

    # The runner's side -------------------------------------------------------------------------

    def progress_fields(self) -> dict[str, Any]:
        return {
            "progress_percent": self.percent,
            "progress_message": self.message,
            "progress_stage": self.stage,
            "progress_data": self.data,
            "failed_items": self.failed_items,
            "failed_items_count": self.failed_items_count,
        }

    def apply(self, fields: dict[str, Any], *, final: bool = False) -> None:
        """Take progress reported from elsewhere (an isolated child's progress_fields()), as if reported here.
        ``final``: it comes with the attempt's outcome, which writes it; it is only published."""
        if fields == self.progress_fields():
            return
        self.percent, self.message = fields["progress_percent"], fields["progress_message"]
        self.stage, self.data = fields["progress_stage"], fields["progress_data"]
        self.failed_items, self.failed_items_count = fields["failed_items"], fields["failed_items_count"]
        if final:
            self._unpublished = True
        else:
            self._changed()

    def progress_frame(self) -> ProgressFrame:
        return {
            "type": "progress",
            "job_id": self.job_id,
            "percent": self.percent,
            "message": self.message,
            "stage": self.stage,
            "data": self.data,
            "at": timezone.now().isoformat(),
        }

    def publish_pending(self, *, older_than: float = 0.0) -> None:
        """Send the latest progress to live listeners if it changed (and was last sent ``older_than`` s ago)."""
        if self._unpublished and time.monotonic() - self._last_publish >= older_than:
            self._unpublished = False
            self._last_publish = time.monotonic()
            publish(self.progress_frame(), self.owner_id)

    def flush(self) -> None:
        """Write pending progress to the row now."""
        if not self._dirty:
            return
        with self._write_lock:
            self._dirty = False
            self._last_write = time.monotonic()
            fields = self.progress_fields()
            if _in_event_loop():
                # The ORM refuses to run inside an event loop (async handlers); a helper thread has none.
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs-progress")
                self._executor.submit(self._write, fields).result()
            else:
                self._write(fields)

    def _write(self, fields: dict[str, Any]) -> None:
        # Only while running: a late write must never overwrite a terminal row.
        JobLog.objects.filter(pk=self.job_id, status=JobStatus.RUNNING).update(**fields)

    def mark_canceled(self) -> None:
        self._canceled.set()

    def close(self) -> None:
        if self._executor is not None:
            # The helper thread opened its own database connection; close it before the thread goes.
            self._executor.submit(connections.close_all).result()
            self._executor.shutdown(wait=True)
            self._executor = None


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
