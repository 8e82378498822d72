"""A job's admin page in Chromium: a long traceback stays in its box, a running job's duration keeps counting."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from tests.browser.conftest import ROOT, DemoSite, screenshot
from tests.browser.test_admin_browser import admin_login, submit, wait_for_job

pytestmark = pytest.mark.browser

# A traceback as long as real ones get: a frame that prints a long argument, and an error naming a long value.
LONG_LINE = "x" * 600
FAILED_JOB = f"""
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from jobs.models import EventKind, JobEvent, JobLog, JobStatus
trace = (
    "Traceback (most recent call last):\\n"
    '  File "/srv/app/project/demo/job_types/reports.py", line 120, in csv_stats\\n'
    "    rows = parse(handle, columns={LONG_LINE!r})\\n"
    "ValueError: the header names no column called {LONG_LINE}\\n"
)
now = timezone.now()
job = JobLog.objects.create(
    job_type="csv-stats", queue="csv-stats", payload={{}}, owner=get_user_model().objects.get(username="demo"),
    status=JobStatus.FAILED, attempts=1, max_attempts=1, started_at=now - timedelta(seconds=3), finished_at=now,
    error_type="ValueError", error_message="the header names no column called {LONG_LINE}", traceback=trace,
)
JobEvent.objects.create(job=job, kind=EventKind.FAILED, status=JobStatus.FAILED, attempt=1,
                        message="ValueError: the header names no column", data={{"traceback": trace}})
print(job.pk)
"""


def make_failed_job(site: DemoSite) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", FAILED_JOB],
        cwd=ROOT,
        env=site.env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def right_edge(page: Any, selector: str) -> float:
    return float(page.evaluate(f"document.querySelector({selector!r}).getBoundingClientRect().right"))


def test_job_page__a_long_traceback_stays_inside_the_content_area(page: Any, demo_site: DemoSite) -> None:
    job_id = make_failed_job(demo_site)
    admin_login(page, demo_site)
    page.goto(f"/admin/jobs/joblog/{job_id}/change/")
    page.locator(".jobs-timeline details summary").first.click()  # the failed event's own traceback
    content = right_edge(page, "#content")
    assert right_edge(page, ".field-traceback_display .jobs-traceback") <= content
    assert right_edge(page, ".jobs-timeline") <= content
    assert right_edge(page, ".jobs-timeline .jobs-traceback") <= content
    assert right_edge(page, ".field-error_display .jobs-error") <= content
    # Neither the page nor the box scrolls sideways: the long lines wrap, the end of each in view.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.evaluate(
        "(() => { const box = document.querySelector('.field-traceback_display .jobs-traceback');"
        " return box.scrollWidth <= box.clientWidth; })()"
    )
    screenshot(page, "admin-job-detail-long-traceback")


def test_job_page__a_running_jobs_duration_keeps_counting(page: Any, demo_site: DemoSite) -> None:
    admin_login(page, demo_site)
    job_id = submit(page, "report", {"rows": 100_000, "title": "A duration that counts"})
    wait_for_job(page, job_id, "running")
    # Frozen mid-run, the job stays running while the page is watched: only the clock moves.
    demo_site.pause_worker()
    try:
        page.goto(f"/admin/jobs/joblog/{job_id}/change/")
        duration = page.locator(".fieldBox.field-duration .readonly")
        first = duration.inner_text()
        time.sleep(2.2)
        second = duration.inner_text()
        assert first != second, f"the duration stayed at {first!r}"
        screenshot(page, "admin-job-detail-running-duration")
    finally:
        demo_site.resume_worker()
    wait_for_job(page, job_id, "succeeded", timeout=120)
