"""The end-user pages of the demo: start a job from its form, list my jobs, see my contacts, open a deployed site.

The job's own page (progress, result, cancel, retry) is ``views.job_detail``.
"""

from __future__ import annotations

import csv
import io
import mimetypes
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from rest_framework.authtoken.models import Token

from jobs import submit
from jobs.exceptions import InvalidPayload, JobsError
from jobs.models import JobStatus
from jobs.registry import all_types

from . import contacts, forms, uploads
from .job_types import ai_is_local, deploy_priority
from .models import Contact, OutboxMessage
from .views import my_jobs

RECENT_JOBS = 10
LISTED_JOBS = 100
CONTACTS_IN_FORM = 500
CONTACTS_PER_PAGE = 50
SAMPLE_ROWS = 40


@login_required
@require_GET
@never_cache  # the page shows the user's API token: no shared cache keeps it
def home(request: HttpRequest) -> HttpResponse:
    return render_home(request)


@login_required
@require_POST
def api_token(request: HttpRequest) -> HttpResponse:
    """Create the user's REST API token if they have none; the home page shows it (never a URL: URLs get logged)."""
    Token.objects.get_or_create(user=request.user)
    return redirect("/#api-token")


def render_home(
    request: HttpRequest,
    *,
    failed_type: str = "",
    values: dict[str, Any] | None = None,
    errors: dict[str, list[str]] | None = None,
    status: int = 200,
) -> HttpResponse:
    user_contacts = Contact.objects.filter(owner_id=request.user.pk)
    contact_choices = [
        (str(c.pk), f"{c.name or '(no name)'} · {c.email or c.phone}") for c in user_contacts[:CONTACTS_IN_FORM]
    ]
    limits = {t.name: t for t in all_types()}
    cards = []
    for form in forms.FORMS:
        mine = form.job_type == failed_type
        field_errors = (errors or {}) if mine else {}
        inputs = {f.name for f in form.fields}
        cards.append(
            {
                "spec": form,
                "type": limits.get(form.job_type),
                "fields": [
                    {
                        "spec": f,
                        "id": f"id_{form.job_type}_{f.name}",
                        "value": (values or {}).get(f.name, f.initial) if mine else f.initial,
                        "errors": field_errors.get(f.name, []),
                        "choices": contact_choices if f.input_type == "contacts" else f.choices,
                    }
                    for f in form.fields
                ],
                # Errors that belong to no input of the form (non_field_errors, or a payload field it lacks).
                "errors": [
                    f"{name}: {text}" if name != "non_field_errors" else text
                    for name, texts in field_errors.items()
                    if name not in inputs
                    for text in texts
                ],
            }
        )
    context = {
        "cards": cards,
        "jobs": my_jobs(request).order_by("-created_at")[:RECENT_JOBS],
        "contact_count": user_contacts.count(),
        "ai_local": ai_is_local(),
        "ai_model": getattr(settings, "AI_MODEL", ""),
        "ai_base_url": getattr(settings, "AI_BASE_URL", ""),
        "api_token": Token.objects.filter(user_id=request.user.pk).values_list("key", flat=True).first(),
    }
    return render(request, "demo/home.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def start_job(request: HttpRequest, type_name: str) -> HttpResponse:
    form = forms.FORMS_BY_TYPE.get(type_name)
    if form is None:
        raise Http404("No such demo job type.")
    if request.method == "GET":
        return redirect(f"/#form-{type_name}")
    values = form.values(request)
    payload: dict[str, Any] = {}
    try:
        payload = forms.build_payload(form, request, values)
        priority = deploy_priority(payload) if type_name == "deploy" else "normal"
        job = submit(type_name, payload, user=request.user, priority=priority)
    except JobsError as exc:
        # No job: the files stored from this form's uploads go at once.
        for stored in form.stored_files(payload):
            uploads.discard(stored)
        if isinstance(exc, InvalidPayload):
            errors = forms.field_errors(form, exc.errors, payload)
        else:
            errors = {"non_field_errors": [str(exc)]}
        return render_home(request, failed_type=type_name, values=values, errors=errors, status=400)
    for stored in form.stored_files(payload):
        uploads.claim(stored, str(job.id))
    return redirect("job-detail", job_id=job.id)


@login_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    """My jobs, newest first, optionally of one type or status; the page keeps their status live."""
    jobs = my_jobs(request).order_by("-created_at")
    type_name = request.GET.get("type", "")
    status = request.GET.get("status", "")
    if type_name:
        jobs = jobs.filter(job_type=type_name)
    if status in JobStatus.values:
        jobs = jobs.filter(status=status)
    else:
        status = ""
    context = {
        "jobs": jobs[:LISTED_JOBS],
        "types": sorted(t.name for t in all_types() if not t.staff_only or request.user.is_staff),
        "statuses": JobStatus.values,
        "selected_type": type_name,
        "selected_status": status,
        "limit": LISTED_JOBS,
    }
    return render(request, "demo/job_list.html", context)


@login_required
@require_GET
def contact_list(request: HttpRequest) -> HttpResponse:
    user_contacts = Contact.objects.filter(owner_id=request.user.pk)
    page = Paginator(user_contacts, CONTACTS_PER_PAGE).get_page(request.GET.get("page"))
    outbox = OutboxMessage.objects.filter(job_id__in=my_jobs(request).values("id"))[:20]
    return render(request, "demo/contacts.html", {"page": page, "total": user_contacts.count(), "outbox": outbox})


@login_required
@require_GET
def sample_csv(request: HttpRequest) -> HttpResponse:
    """A contact CSV to try contact-import with: a few bad rows and a duplicate among good ones."""
    out = io.StringIO()
    csv.writer(out).writerows(contacts.sample_rows(SAMPLE_ROWS, invalid_every=13, duplicate_every=17))
    response = HttpResponse(out.getvalue(), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="contacts-sample.csv"'
    return response


@login_required
@require_GET
def deployed_site(request: HttpRequest, job_id: uuid.UUID, path: str) -> FileResponse:
    """A file of a succeeded deploy's release folder, to its owner only."""
    job = get_object_or_404(my_jobs(request), pk=job_id, job_type="deploy", status=JobStatus.SUCCEEDED)
    root = (Path(settings.MEDIA_ROOT) / str((job.result or {}).get("folderPath", ""))).resolve()
    target = (root / path).resolve()
    media = Path(settings.MEDIA_ROOT).resolve()
    if not root.is_relative_to(media) or root == media or not target.is_relative_to(root) or not target.is_file():
        raise Http404("No such file in this release.")
    content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target.open("rb"), content_type=content_type)
