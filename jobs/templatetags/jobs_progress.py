"""``{% job_progress job %}``: a live progress widget for any page (websocket first, REST polling as fallback)."""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.core.serializers.json import DjangoJSONEncoder
from django.urls import NoReverseMatch, reverse

from ..models import JobLog

register = template.Library()


@register.inclusion_tag("jobs/progress.html")
def job_progress(job: JobLog) -> dict[str, Any]:
    try:
        status_url = reverse("jobs-api:job-detail", kwargs={"pk": job.pk})
    except NoReverseMatch:
        status_url = ""  # the API is not mounted: websockets only
    return {
        "job": job,
        "status_url": status_url,
        "ws_path": f"/ws/jobs/{job.pk}/",
        "result_json": json.dumps(job.result, indent=2, sort_keys=True, cls=DjangoJSONEncoder)
        if job.result is not None
        else "",
    }
