"""The demo pages: start a job from a form, then watch it. Everything job-related goes through ``jobs``."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from jobs import cancel_job, retry_job, submit
from jobs.exceptions import InvalidPayload, JobsError
from jobs.models import JobLog, JobStatus

from .job_types import uploads_dir

RECENT_JOBS = 20
MAX_UPLOAD_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    input_type: str = "text"
    initial: str = ""
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoForm:
    job_type: str
    title: str
    description: str
    fields: tuple[Field, ...]
    multipart: bool = False


FORMS = (
    DemoForm(
        "report",
        "CSV report",
        "Computes number facts (squares, primes, Collatz steps) and writes them to a CSV file.",
        (
            Field("title", "Title", initial="Number facts"),
            Field("rows", "Rows", "number", "20000", {"min": "1", "max": "100000"}),
        ),
    ),
    DemoForm(
        "welcome-email",
        "Welcome email",
        "Sends a real email through Django's email backend (the demo writes it to var/mail/).",
        (
            Field("name", "Name", initial="Ada"),
            Field("email", "Email", "email", "ada@example.com"),
        ),
    ),
    DemoForm(
        "csv-stats",
        "CSV statistics",
        "Upload a CSV file; the job summarises every column. Bad rows are reported one by one.",
        (Field("upload", "CSV file", "file", attrs={"accept": ".csv,text/csv"}),),
        multipart=True,
    ),
)
FORMS_BY_TYPE = {form.job_type: form for form in FORMS}


def my_jobs(request: HttpRequest) -> Any:
    # The demo shows every user only their own jobs, staff included.
    return JobLog.objects.filter(owner_id=request.user.pk)


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render_home(request)


def render_home(
    request: HttpRequest,
    *,
    failed_type: str = "",
    values: dict[str, Any] | None = None,
    errors: dict[str, list[str]] | None = None,
    status: int = 200,
) -> HttpResponse:
    forms = []
    for form in FORMS:
        mine = form.job_type == failed_type
        field_errors = (errors or {}) if mine else {}
        forms.append(
            {
                "spec": form,
                "fields": [
                    {
                        "spec": f,
                        "value": str((values or {}).get(f.name, f.initial)) if mine else f.initial,
                        "errors": field_errors.get(f.name, []),
                    }
                    for f in form.fields
                ],
                # Errors that belong to no input on the form (e.g. non_field_errors, or a server-side field).
                "errors": [
                    f"{name}: {text}" if name != "non_field_errors" else text
                    for name, texts in field_errors.items()
                    if name not in {f.name for f in form.fields}
                    for text in texts
                ],
            }
        )
    jobs = my_jobs(request).order_by("-created_at")[:RECENT_JOBS]
    return render(request, "demo/home.html", {"forms": forms, "jobs": jobs}, status=status)


@login_required
@require_POST
def start_job(request: HttpRequest, type_name: str) -> HttpResponse:
    form = FORMS_BY_TYPE.get(type_name)
    if form is None:
        raise Http404("No such demo job type.")
    values = {f.name: request.POST.get(f.name, "") for f in form.fields if f.input_type != "file"}
    try:
        payload = _csv_payload(request) if type_name == "csv-stats" else values
        job = submit(type_name, payload, user=request.user)
    except InvalidPayload as exc:
        return render_home(request, failed_type=type_name, values=values, errors=_flatten(exc.errors), status=400)
    except JobsError as exc:
        return render_home(
            request, failed_type=type_name, values=values, errors={"non_field_errors": [str(exc)]}, status=400
        )
    return redirect("job-detail", job_id=job.id)


def _csv_payload(request: HttpRequest) -> dict[str, Any]:
    upload = request.FILES.get("upload")
    if upload is None:
        raise InvalidPayload({"upload": ["Choose a CSV file."]})
    if upload.size is not None and upload.size > MAX_UPLOAD_BYTES:
        raise InvalidPayload({"upload": [f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB."]})
    name = f"{uuid.uuid4()}.csv"
    target = uploads_dir() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as handle:
        for chunk in upload.chunks():
            handle.write(chunk)
    return {"file": f"uploads/{name}"}


def _flatten(errors: Any) -> dict[str, list[str]]:
    """Serializer errors as {field: [message, ...]}; nested errors are shown as text."""
    if not isinstance(errors, dict):
        return {"non_field_errors": [str(errors)]}
    flat: dict[str, list[str]] = {}
    for name, texts in errors.items():
        if isinstance(texts, list | tuple):
            flat[str(name)] = [str(text) for text in texts]
        else:
            flat[str(name)] = [str(texts)]
    # The csv-stats form has one input, "upload"; its payload field is "file".
    if "file" in flat:
        flat.setdefault("upload", []).extend(flat.pop("file"))
    return flat


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
    job = get_object_or_404(my_jobs(request), pk=job_id)
    try:
        cancel_job(job, user=request.user)
    except JobsError as exc:
        messages.warning(request, str(exc))
    return redirect("job-detail", job_id=job.id)


@login_required
@require_POST
def retry(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = get_object_or_404(my_jobs(request), pk=job_id)
    try:
        retry_job(job, user=request.user)
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
