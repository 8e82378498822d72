"""A job in JSON (DESIGN.md) and its websocket status frame, built here once for the API, the admin and consumers.

Worker processes publish status frames through this module, so it imports neither DRF, the admin nor channels.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from .access import may_see_all_jobs
from .types import FailedItem, StatusFrame

if TYPE_CHECKING:
    from django.http import HttpRequest

    from .models import JobLog


class JobProgress(TypedDict):
    percent: int
    message: str
    stage: str
    data: dict[str, Any]


class JobJSON(TypedDict):
    id: str
    type: str
    queue: str
    priority: str
    status: str
    payload: dict[str, Any]
    progress: JobProgress
    result: Any
    error: dict[str, str] | None
    attempts: int
    max_attempts: int
    failed_items: list[FailedItem]
    failed_items_count: int
    created_at: str | None
    enqueued_at: str | None
    run_at: str | None
    started_at: str | None
    finished_at: str | None
    owner: Any
    schedule: int | None
    status_url: str
    ws_url: str


def sees_traceback(user: Any) -> bool:
    """Whether ``user`` is shown tracebacks, in a job's ``error`` and in its events: ``jobs.view_joblog``, whoever
    owns the job (a traceback can name another user's data, paths and settings)."""
    return may_see_all_jobs(user)


def job_error(job: JobLog, *, traceback: bool = False) -> dict[str, str] | None:
    """A job's ``error``: ``{type, message}``, plus ``traceback`` when asked for; None while it has none."""
    if not (job.error_type or job.error_message):
        return None
    error = {"type": job.error_type, "message": job.error_message}
    if traceback:
        # Read only when shown: the API's lists defer the column for viewers who may not see it.
        error["traceback"] = job.traceback
    return error


MASK = "***"


def job_payload(job: JobLog, viewer: Any, sensitive: Collection[str]) -> dict[str, Any]:
    """What was submitted, with the type's ``sensitive`` top-level keys as ``"***"`` unless ``viewer`` has
    ``jobs.view_joblog``: the same rule as tracebacks, and the owner is no exception (a password typed once is not
    shown again)."""
    payload = job.payload if isinstance(job.payload, dict) else {}
    if not sensitive or sees_traceback(viewer):
        return payload
    return {key: MASK if key in sensitive else value for key, value in payload.items()}


def job_json(job: JobLog, viewer: Any, *, sensitive: Collection[str], request: HttpRequest | None = None) -> JobJSON:
    """The job as ``viewer`` sees it. With the request its URLs are absolute (the API); without, paths.

    ``sensitive``: the payload keys the job's type marks as such (``registry.sensitive_keys(job.job_type)``).
    """
    path = reverse("jobs-api:job-detail", kwargs={"pk": job.pk})
    ws_path = f"/ws/jobs/{job.pk}/"
    if request is not None:
        path = request.build_absolute_uri(path)
        ws_path = f"{'wss' if request.is_secure() else 'ws'}://{request.get_host()}{ws_path}"
    # Keys in the order of the API's declared fields: clients have always received them in this order.
    return {
        "id": str(job.pk),
        "type": job.job_type,
        "queue": job.queue,
        "priority": str(job.priority),
        "status": str(job.status),
        "payload": job_payload(job, viewer, sensitive),
        "progress": {
            "percent": job.progress_percent,
            "message": job.progress_message,
            "stage": job.progress_stage,
            "data": job.progress_data,
        },
        "result": job.result,
        "error": job_error(job, traceback=sees_traceback(viewer)),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "failed_items": job.failed_items,
        "failed_items_count": job.failed_items_count,
        "created_at": moment(job.created_at),
        "enqueued_at": moment(job.enqueued_at),
        "run_at": moment(job.run_at),
        "started_at": moment(job.started_at),
        "finished_at": moment(job.finished_at),
        # Primary keys read from the row's *_id columns: a list never joins.
        "owner": job.owner_id,
        "schedule": job.schedule_id,
        "status_url": path,
        "ws_url": ws_path,
    }


def moment(value: datetime | None) -> str | None:
    """ISO 8601 in the current time zone, UTC written "Z": the text DRF's DateTimeField gives for the same value."""
    if value is None:
        return None
    if settings.USE_TZ:
        value = timezone.localtime(value) if timezone.is_aware(value) else timezone.make_aware(value)
    elif timezone.is_aware(value):
        value = timezone.make_naive(value, UTC)
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def status_frame(job: JobLog) -> StatusFrame:
    """The frame that tells live listeners a job's status changed. Never a traceback: every listener gets it."""
    return {
        "type": "status",
        "job_id": str(job.id),
        "status": job.status,
        "attempts": job.attempts,
        "result": job.result,
        "error": job_error(job),
        "at": timezone.now().isoformat(),
    }
