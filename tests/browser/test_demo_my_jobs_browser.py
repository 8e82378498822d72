"""The demo's "My jobs" page in Chromium: rows that finish while it is open show their outcome, failures their error."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.browser.conftest import DemoSite, login, screenshot
from tests.browser.test_admin_browser import job_json, submit, wait_for_job

pytestmark = pytest.mark.browser


def test_my_jobs__rows_added_live_show_the_outcome_and_the_error(page: Any, demo_site: DemoSite) -> None:
    login(page, demo_site)
    page.goto("/jobs/")
    report = submit(page, "report", {"rows": 5000, "title": "Read back by csv-stats"})
    wait_for_job(page, report, "succeeded")
    stats = submit(page, "csv-stats", {"file": job_json(page, report)["result"]["path"]})
    missing = submit(page, "csv-stats", {"file": f"uploads/{uuid.uuid4()}.csv"})
    wait_for_job(page, stats, "succeeded")
    wait_for_job(page, missing, "failed")
    assert job_json(page, stats)["progress"]["message"] == "Summarising"

    # The page was rendered before these jobs existed: its poll adds their rows (jobs_live.js, not the server).
    message = 'tr[data-job-id="{}"] [data-col="message"]'
    page.wait_for_selector(message.format(missing) + " .job-error", timeout=30_000)
    page.wait_for_selector(message.format(stats))
    assert page.locator(message.format(stats)).inner_text() == "Done"
    assert page.locator(f'tr[data-job-id="{stats}"] [data-col="progress"]').inner_text().strip() == "100%"
    error = page.locator(message.format(missing)).inner_text()
    # The demo user is staff, who may read any file: this one is missing.
    assert error.startswith("FileNotFoundError: [Errno 2] No such file or directory") and "Traceback" not in error
    screenshot(page, "demo-my-jobs-outcomes")
