"""The demo's job types in Chromium: start each from its form as the demo user and watch it finish.

The demo runs as `make demo` runs it (tests/browser/conftest.py): uvicorn, one worker, the scheduler, the local
AI model served by the demo itself. Screenshots of every page land in artifacts/screenshots/demo-*.png.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import DemoSite, login, screenshot

JOB_TIMEOUT = 90_000  # ms


@pytest.fixture
def demo(page: Any, demo_site: DemoSite) -> Any:
    login(page, demo_site)
    return page


def start(page: Any, type_name: str, fill: dict[str, str] | None = None) -> str:
    """Fill the job type's form on the home page, submit it, land on the job's page; the job id."""
    page.goto("/")
    form = page.locator(f"#form-{type_name}")
    for name, value in (fill or {}).items():
        form.locator(f'[name="{name}"]').fill(value)
    form.locator('[type="submit"]').click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    return str(page.url.rstrip("/").rsplit("/", 1)[-1])


def finished(page: Any, status: str = "succeeded") -> dict[str, Any]:
    """Wait on the progress page until the job ends with ``status``; its result as shown."""
    try:
        page.wait_for_selector(
            "[data-job-progress][data-status='succeeded'], [data-job-progress][data-status='failed']",
            timeout=JOB_TIMEOUT,
        )
    except Exception:
        screenshot(page, "demo-timeout")
        raise
    widget = page.locator("[data-job-progress]")
    assert widget.get_attribute("data-status") == status, widget.inner_text()
    result = widget.locator('[data-field="result"]')
    result.wait_for(state="visible")
    return dict(json.loads(result.inner_text()))


def test_demo_home__a_form_per_job_type(demo: Any) -> None:
    demo.goto("/")
    for type_name in ("deploy", "ai-generation", "contact-import", "bulk-message", "email-notification", "report"):
        assert demo.locator(f"#form-{type_name}").is_visible()
    assert "Local demo model." in demo.locator("#ai-model-notice").inner_text()
    screenshot(demo, "demo-home")


def test_demo_deploy__custom_domain_goes_first_and_the_site_opens(demo: Any, demo_site: DemoSite) -> None:
    start(demo, "deploy", {"project": "rockets", "custom_domain": "www.rockets.example"})
    assert "deploy (high)" in demo.locator(".facts").inner_text()
    result = finished(demo)

    assert result["fileCount"] == 11 and result["live"] is True and result["domain"] == "www.rockets.example"
    assert result["folderPath"].startswith("sites/") and (demo_site.var_dir / "media" / result["folderPath"]).is_dir()
    assert demo.locator('[data-job-progress] [data-field="stage"]').inner_text() == "done"
    screenshot(demo, "demo-deploy-succeeded")

    demo.goto(result["url"])
    assert demo.locator("h1").inner_text() == "Acme Rockets"
    screenshot(demo, "demo-deploy-site")


def test_demo_ai_generation__streams_from_the_local_model(demo: Any) -> None:
    start(demo, "ai-generation", {"prompt": "Write a short guide to background jobs", "sections": "3"})
    result = finished(demo)

    assert result["localDemoModel"] is True and result["model"] == "demo-local"
    assert len(result["sections"]) == 3 and result["finishReason"] == "stop"
    screenshot(demo, "demo-ai-generation-succeeded")


def test_demo_ai_generation__retries_a_rate_limited_model(demo: Any) -> None:
    start(demo, "ai-generation", {"prompt": "Explain retries [simulate 429]", "sections": "2"})
    result = finished(demo)

    assert len(result["sections"]) == 2
    assert demo.locator('[data-job-progress] [data-field="attempts"]').inner_text() == "attempt 3 of 4"


def import_sample(page: Any, tmp_path: Path) -> None:
    """Start contact-import with the demo's sample CSV (40 rows, 3 bad, 2 duplicates)."""
    path = tmp_path / "contacts.csv"
    path.write_bytes(page.request.get("/contacts/sample.csv").body())
    page.goto("/")
    page.locator("#form-contact-import [name=upload]").set_input_files(str(path))
    page.locator("#form-contact-import [type=submit]").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))


def test_demo_contact_import__partial_result(demo: Any, tmp_path: Path) -> None:
    import_sample(demo, tmp_path)
    result = finished(demo)

    assert result["total"] == 40 and result["failed"] == 3
    demo.reload()
    assert "Failed items (3)" in demo.locator("body").inner_text()
    screenshot(demo, "demo-contact-import-succeeded")
    demo.goto("/contacts/")
    assert demo.locator("table.contacts tbody tr").count() > 30
    screenshot(demo, "demo-contacts")


def test_demo_bulk_message__to_all_contacts(demo: Any, tmp_path: Path) -> None:
    demo.goto("/contacts/")
    if not demo.locator("table.contacts").count():
        import_sample(demo, tmp_path)
        finished(demo)
    start(demo, "bulk-message")
    result = finished(demo)

    assert result["total"] > 30 and result["sent"] + result["failed"] == result["total"]
    assert result["messagesPerSecond"] == 12 and result["seconds"] >= (result["total"] - 1) / 12 - 0.1
    screenshot(demo, "demo-bulk-message-succeeded")


def test_demo_email_notification__writes_the_mails(demo: Any, demo_site: DemoSite) -> None:
    start(demo, "email-notification", {"batch_size": "2"})
    result = finished(demo)

    assert result == {"sent": 3, "alreadySent": 0, "failed": 0, "recipients": 3, "batches": 2}
    mails = "".join(p.read_text() for p in (demo_site.var_dir / "mail").iterdir())
    assert mails.count("Subject: Your launch is confirmed") >= 3
    screenshot(demo, "demo-email-notification-succeeded")


def test_demo_my_jobs__statuses_update_without_a_reload(demo: Any) -> None:
    job_id = start(demo, "deploy", {"project": "live-list"})
    demo.goto("/jobs/")
    row = demo.locator(f'tr[data-job-id="{job_id}"]')
    assert row.get_attribute("data-status") != "succeeded"
    demo.wait_for_selector(f'tr[data-job-id="{job_id}"][data-status="succeeded"]', timeout=JOB_TIMEOUT)
    assert row.locator('[data-col="progress"] span').inner_text() == "100%"
    assert row.locator("text=open the site").is_visible()

    # A job started elsewhere (here: the REST API) appears at the top and follows its status.
    csrf = next(c["value"] for c in demo.context.cookies() if c["name"] == "csrftoken")
    answer = demo.request.post(
        "/api/jobs/",
        data={
            "type": "email-notification",
            "payload": {"recipients": ["api@example.com"], "subject": "S", "body": "B"},
        },
        headers={"X-CSRFToken": csrf, "Referer": demo.url},
    )
    assert answer.status == 202, answer.text()
    new_id = answer.json()["id"]
    demo.wait_for_selector(
        f'tbody tr:first-child[data-job-id="{new_id}"][data-status="succeeded"]', timeout=JOB_TIMEOUT
    )
    assert demo.locator(f'tr[data-job-id="{new_id}"] [data-col="type"]').inner_text() == "email-notification"
    screenshot(demo, "demo-my-jobs")
