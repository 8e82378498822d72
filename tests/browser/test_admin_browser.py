"""The jobs admin in Chromium on the real demo: every page, pausing a queue, retrying a failed job until it succeeds."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import pytest

from tests.browser.conftest import DemoSite, login, screenshot

pytestmark = pytest.mark.browser


def admin_login(page: Any, site: DemoSite) -> None:
    login(page, site, "/admin/login/")
    assert page.url.rstrip("/").endswith("/admin"), page.url


def submit(page: Any, type_name: str, payload: dict[str, Any]) -> str:
    """Submit a job through the REST API with the browser's session (and its CSRF token)."""
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(
        "/api/jobs/",
        data=json.dumps({"type": type_name, "payload": payload}),
        headers={"Content-Type": "application/json", "X-CSRFToken": token},
    )
    assert response.status == 202, response.text()
    return str(response.json()["id"])


def job_json(page: Any, job_id: str) -> dict[str, Any]:
    response = page.request.get(f"/api/jobs/{job_id}/")
    assert response.ok, response.text()
    job: dict[str, Any] = response.json()
    return job


def job_status(page: Any, job_id: str) -> str:
    return str(job_json(page, job_id)["status"])


def wait_for_job(page: Any, job_id: str, status: str, *, attempts: int = 1, timeout: float = 60.0) -> None:
    """Wait until the job has reached ``status`` in its ``attempts``-th attempt (or a later one)."""
    # Polled from here, not with page.wait_for_function: that takes any truthy return as done, and an async
    # predicate returns a Promise, which is truthy at once, so it would never wait.
    deadline = time.monotonic() + timeout
    job = job_json(page, job_id)
    while job["status"] != status or job["attempts"] < attempts:
        assert time.monotonic() < deadline, (
            f"job {job_id} is still {job['status']!r} (attempt {job['attempts']}) after {timeout} s, "
            f"not {status!r} (attempt {attempts})"
        )
        time.sleep(0.25)
        job = job_json(page, job_id)


def queue_paused(page: Any, name: str) -> bool:
    return bool(next(q for q in page.request.get("/api/queues/").json() if q["name"] == name)["paused"])


def test_admin_pages__list_detail_schedules_queues(page: Any, demo_site: DemoSite) -> None:
    admin_login(page, demo_site)
    done = submit(page, "report", {"rows": 3000, "title": "Admin screenshots"})
    missing = submit(page, "csv-stats", {"file": f"uploads/{uuid.uuid4()}.csv"})
    wait_for_job(page, done, "succeeded")
    wait_for_job(page, missing, "failed")

    page.goto("/admin/")
    queues_link = page.locator("a[href='/admin/jobs/queue/']").first
    assert queues_link.is_visible()
    screenshot(page, "admin-index")

    page.goto("/admin/jobs/joblog/")
    screenshot(page, "admin-job-list")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() >= 2
    assert page.locator(f"[data-job-status='{done}']").inner_text() == "succeeded"
    assert page.locator(f"[data-job-status='{missing}']").inner_text() == "failed"
    assert page.locator(f"[data-job-progress='{done}']").get_attribute("aria-valuenow") == "100"
    assert page.locator("#changelist-filter").get_by_text("By status").is_visible()

    page.fill("#searchbar", missing[:8])
    with page.expect_navigation():
        page.click("#changelist-search input[type=submit]")
    assert page.locator("#result_list tbody tr").count() == 1
    screenshot(page, "admin-job-list-search")

    page.goto(f"/admin/jobs/joblog/{done}/change/")
    assert page.locator(".jobs-json").first.is_visible()
    assert '"rows": 3000' in page.locator(".jobs-json").first.inner_text()
    assert page.locator(".jobs-timeline").get_by_text("succeeded").first.is_visible()
    assert page.locator(".jobs-live [role=progressbar]").get_attribute("aria-valuenow") == "100"
    screenshot(page, "admin-job-detail-succeeded")

    page.goto(f"/admin/jobs/joblog/{missing}/change/")
    assert "FileNotFoundError" in page.locator(".jobs-error").inner_text()
    assert "Traceback" in page.locator(".jobs-traceback").first.inner_text()
    assert page.locator("button:has-text('Retry')").is_visible()
    screenshot(page, "admin-job-detail-failed")

    page.goto("/admin/jobs/jobschedule/add/")
    page.fill("#id_name", "Weekday report")
    page.select_option("#id_job_type", "report")
    page.fill("#id_payload", json.dumps({"rows": 100, "title": "Weekday"}))
    page.fill("#id_cron", "61 9 * * 1-5")
    with page.expect_navigation():
        page.click("input[name=_continue]")
    assert "is not a cron expression of five fields" in page.locator(".errorlist").first.inner_text()
    screenshot(page, "admin-schedule-bad-cron")

    page.fill("#id_cron", "30 9 * * 1-5")
    words = page.locator('[data-schedule-preview="words"]')
    page.wait_for_function(
        "document.querySelector('[data-schedule-preview=\"words\"]').textContent.includes('09:30')", polling=100
    )
    page.click("input[name=_continue]")
    page.wait_for_url(re.compile(r"/admin/jobs/jobschedule/\d+/change/"))
    assert "At 09:30, Monday through Friday (UTC)" in words.inner_text()
    assert page.locator('[data-schedule-preview="runs"] li').count() == 5
    # Only the chosen kind's timing field is shown.
    assert page.locator(".field-cron").is_visible() and page.locator(".field-interval_seconds").is_hidden()
    screenshot(page, "admin-schedule-change")

    page.goto("/admin/jobs/jobschedule/")
    assert page.locator("#result_list").get_by_text("At 09:30, Monday through Friday (UTC)").is_visible()
    screenshot(page, "admin-schedule-list")

    page.goto("/admin/jobs/queue/")
    page.wait_for_selector('[data-live-indicator][data-state="live"]')
    assert page.locator("#queue-report").is_visible()
    assert page.locator(".jobs-chart svg").count() == 3  # the last hour, day and week
    assert page.locator('[data-total="hour-succeeded"]').inner_text() != "0"
    assert page.locator('[data-count="report:normal:succeeded"] a').inner_text() != "0"
    assert page.locator("[data-workers] tr").first.locator("td").count() == 7
    screenshot(page, "admin-queues")


def test_admin_pages__dark_theme(page: Any, demo_site: DemoSite) -> None:
    page.emulate_media(color_scheme="dark")
    admin_login(page, demo_site)
    page.goto("/admin/jobs/joblog/")
    screenshot(page, "admin-job-list-dark")
    page.goto("/admin/jobs/queue/")
    page.wait_for_selector(".jobs-chart svg")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 18, 18)", background  # the admin's own dark theme, which ours follows
    screenshot(page, "admin-queues-dark")


def test_queues_page__pause_and_resume(page: Any, demo_site: DemoSite) -> None:
    admin_login(page, demo_site)
    page.goto("/admin/jobs/queue/?queue=report")
    section = page.locator("#queue-report")
    badge = section.locator("[data-paused-badge]")
    assert badge.is_hidden()

    with page.expect_navigation():
        section.locator("button:has-text('Pause')").click()
    assert page.locator(".messagelist").get_by_text("Paused queue “report”.").is_visible()
    assert badge.is_visible() and queue_paused(page, "report")
    held = submit(page, "report", {"rows": 10, "title": "Held while paused"})
    page.wait_for_timeout(2500)
    assert job_status(page, held) == "queued"
    page.evaluate("window.scrollTo(0, 0)")  # the redirect scrolled to the queue; the sidebar sticks to the view
    screenshot(page, "admin-queues-paused")

    with page.expect_navigation():
        section.locator("button:has-text('Resume')").click()
    assert page.locator(".messagelist").get_by_text("Resumed queue “report”.").is_visible()
    assert badge.is_hidden() and not queue_paused(page, "report")
    wait_for_job(page, held, "succeeded")


def test_queues_page__requeue_failed_asks_for_confirmation(page: Any, demo_site: DemoSite) -> None:
    admin_login(page, demo_site)
    failed = submit(page, "csv-stats", {"file": f"reports/{uuid.uuid4()}.csv"})
    wait_for_job(page, failed, "failed")
    page.goto("/admin/jobs/queue/?queue=csv-stats")
    with page.expect_navigation():
        page.locator("#queue-csv-stats a:has-text('Requeue failed')").click()
    assert page.get_by_text("Failed jobs now:").is_visible()
    screenshot(page, "admin-queue-requeue-confirm")
    with page.expect_navigation():
        page.click("input[type=submit]")
    assert page.locator(".messagelist").get_by_text("failed jobs of “csv-stats”").is_visible()
    # The file is still missing: it fails again, under the same id.
    wait_for_job(page, failed, "failed", attempts=2)


def test_job_detail__retry_a_failed_job_and_watch_it_succeed(page: Any, demo_site: DemoSite) -> None:
    admin_login(page, demo_site)
    name = f"{uuid.uuid4()}.csv"
    job_id = submit(page, "csv-stats", {"file": f"uploads/{name}"})
    wait_for_job(page, job_id, "failed")

    page.goto(f"/admin/jobs/joblog/?q={job_id}")
    with page.expect_navigation():
        page.locator(f"#result_list a:has-text('{job_id[:8]}')").click()
    assert page.locator(".jobs-badge--failed").first.is_visible()
    assert "FileNotFoundError" in page.locator(".jobs-error").inner_text()

    # What was missing arrives; the retry then succeeds under the same id.
    uploads = demo_site.var_dir / "media" / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    (uploads / name).write_text("name,amount\nada,3\nbob,4\n")
    with page.expect_navigation():
        page.click("button:has-text('Retry')")
    assert page.locator(".messagelist").get_by_text("The job was sent back to its queue.").is_visible()
    page.wait_for_selector(".jobs-badge--succeeded", timeout=60_000)
    page.wait_for_load_state()
    page.wait_for_selector(".jobs-json >> text=amount")
    assert job_status(page, job_id) == "succeeded"
    timeline = page.locator(".jobs-timeline").inner_text()
    assert "retried by hand" in timeline and "by demo" in timeline
    screenshot(page, "admin-job-retried-succeeded")


def test_job_detail__progress_moves_live(page: Any, demo_site: DemoSite) -> None:
    admin_login(page, demo_site)
    job_id = submit(page, "report", {"rows": 60_000, "title": "Watched from the admin"})
    page.goto(f"/admin/jobs/joblog/{job_id}/change/")
    page.evaluate(
        """() => {
            window.__percents = [];
            const bar = document.querySelector(".jobs-live [role=progressbar]");
            new MutationObserver(() => window.__percents.push(Number(bar.getAttribute("aria-valuenow"))))
                .observe(bar, {attributes: true});
        }"""
    )
    page.wait_for_function("window.__percents.some(p => p > 0 && p < 100)", timeout=60_000)
    screenshot(page, "admin-job-detail-running")
    page.wait_for_selector(".jobs-badge--succeeded", timeout=120_000)
    assert job_status(page, job_id) == "succeeded"


def test_queues_page__counts_update_by_polling_when_websockets_fail(page: Any, demo_site: DemoSite) -> None:
    page.route_web_socket(re.compile(r".*/ws/.*"), lambda socket: socket.close())
    admin_login(page, demo_site)
    page.goto("/admin/jobs/queue/?queue=report")
    page.wait_for_selector('[data-live-indicator][data-state="polling"]')
    cell = page.locator('[data-count="report:all:succeeded"]')
    before = int(cell.inner_text())
    job_id = submit(page, "report", {"rows": 500, "title": "Counted by polling"})
    wait_for_job(page, job_id, "succeeded")
    # No reload: the page polls its JSON every 5 s and updates the cell in place.
    page.wait_for_function(
        f"Number(document.querySelector('[data-count=\"report:all:succeeded\"]').textContent) > {before}",
        timeout=15_000,
    )
    screenshot(page, "admin-queues-polling")


def test_job_detail__progress_by_polling_when_websockets_fail(page: Any, demo_site: DemoSite) -> None:
    page.route_web_socket(re.compile(r".*/ws/.*"), lambda socket: socket.close())
    admin_login(page, demo_site)
    job_id = submit(page, "report", {"rows": 60_000, "title": "Polled from the admin"})
    page.goto(f"/admin/jobs/joblog/{job_id}/change/")
    page.wait_for_selector('.jobs-live [data-field="live-state"]:has-text("updating every")')
    page.wait_for_selector(".jobs-badge--succeeded", timeout=120_000)
    page.wait_for_selector(".jobs-json >> text=bytes")  # reloaded at the end: the result is shown
    assert page.locator(".jobs-live [role=progressbar]").get_attribute("aria-valuenow") == "100"
