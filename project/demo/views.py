"""The demo's job page (watch, cancel, retry) and the report's file. The start forms and lists are in pages.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from jobs import cancel_job, retry_job, submit
from jobs.exceptions import JobsError
from jobs.models import JobLog, JobStatus


def my_jobs(request: HttpRequest) -> Any:
    # The demo shows every user only their own jobs, staff included.
    return JobLog.objects.filter(owner_id=request.user.pk)


@login_required
@require_GET
def job_detail(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = get_object_or_404(my_jobs(request), pk=job_id)
    result = job.result if isinstance(job.result, dict) else {}
    context = {
        "job": job,
        "result_json": json.dumps(job.result, indent=2, sort_keys=True) if job.result is not None else "",
        "payload_json": json.dumps(job.payload, indent=2, sort_keys=True),
        "has_file": job.status == JobStatus.SUCCEEDED and job.job_type == "report" and bool(result.get("path")),
        "progress_total": (job.progress_data or {}).get("total"),
        "progress_current": (job.progress_data or {}).get("current"),
    }
    return render(request, "demo/job_detail.html", context)


def _owned_report(request: HttpRequest, job_id: uuid.UUID) -> tuple[JobLog, str, Path]:
    """A succeeded report job of this user, its file relative to MEDIA_ROOT, and the absolute path."""
    job = get_object_or_404(my_jobs(request), pk=job_id, job_type="report", status=JobStatus.SUCCEEDED)
    relative = str((job.result or {}).get("path", ""))
    path = (Path(settings.MEDIA_ROOT) / relative).resolve()
    if not relative or not path.is_relative_to(Path(settings.MEDIA_ROOT).resolve()) or not path.is_file():
        raise Http404("The report file is gone.")
    return job, relative, path


@login_required
@require_POST
def cancel(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    return _steer(request, job_id, cancel_job)


@login_required
@require_POST
def retry(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    return _steer(request, job_id, retry_job)


def _steer(request: HttpRequest, job_id: uuid.UUID, service: Callable[..., Any]) -> HttpResponse:
    """Cancel or retry one of the user's jobs; a refusal (already finished, not retryable) becomes a message."""
    job = get_object_or_404(my_jobs(request), pk=job_id)
    try:
        service(job, user=request.user)
    except JobsError as exc:
        messages.warning(request, str(exc))
    return redirect("job-detail", job_id=job.id)


@login_required
@require_GET
def download_report(request: HttpRequest, job_id: uuid.UUID) -> FileResponse:
    job, _relative, path = _owned_report(request, job_id)
    return FileResponse(
        path.open("rb"), as_attachment=True, filename=f"report-{job.short_id}.csv", content_type="text/csv"
    )


@login_required
@require_POST
def analyse_report(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    _job, relative, _path = _owned_report(request, job_id)
    stats = submit("csv-stats", {"file": relative}, user=request.user)
    return redirect("job-detail", job_id=stats.id)
