"""The operator's dashboard in Chromium: compact queue rows (20 fit a 1080 px screen), the charts, a schedule's runs."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from tests.browser.conftest import SCREENSHOTS, DemoSite, screenshot
from tests.browser.test_admin_browser import admin_login, submit, wait_for_job

pytestmark = pytest.mark.browser

SCREEN = {"width": 1920, "height": 1080}


@pytest.fixture
def screen_page(browser: Any, demo_site: DemoSite) -> Any:
    """A full-HD window: what "fits one screen" is measured against."""
    context = browser.new_context(base_url=demo_site.base_url, viewport=SCREEN)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def rows_box(page: Any) -> list[dict[str, float]]:
    return list(page.eval_on_selector_all("tr.jobs-queue", "rows => rows.map(r => r.getBoundingClientRect().toJSON())"))


def test_queues_page__twenty_queue_rows_fit_a_1080px_screen(screen_page: Any, demo_site: DemoSite) -> None:
    page = screen_page
    admin_login(page, demo_site)
    wait_for_job(page, submit(page, "report", {"rows": 50, "title": "For the charts"}), "succeeded")
    page.goto("/admin/jobs/queue/")
    page.wait_for_selector('[data-live-indicator][data-state="live"]')
    boxes = rows_box(page)
    assert len(boxes) >= 8  # every queue of the demo: one row each
    tallest = max(b["height"] for b in boxes)
    assert tallest <= 40, boxes
    # The demo has 8 queues: 20 rows at this height, from where the first one starts, still end on screen.
    assert boxes[0]["top"] + 20 * tallest <= SCREEN["height"], (boxes[0]["top"], tallest)
    screenshot(page, "admin-queues-compact")

    # As 20 queues would look: the demo's rows, copied (ids dropped), to see the whole table on one screen.
    page.evaluate(
        """() => {
            const rows = [...document.querySelectorAll("tbody.jobs-queue-group")];
            for (let i = 0; rows.length + i < 20; i++) {
                const copy = rows[i % rows.length].cloneNode(true);
                copy.querySelectorAll("[id]").forEach(e => e.removeAttribute("id"));
                rows[0].parentNode.insertBefore(copy, rows[rows.length - 1].nextSibling);
            }
        }"""
    )
    boxes = rows_box(page)
    assert len(boxes) == 20 and boxes[-1]["bottom"] <= SCREEN["height"], boxes[-1]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "admin-queues-20-rows.png"))  # the screen, not the page

    # Details on demand: the row under the queue opens with its counts per priority and status.
    page.reload()
    details = page.locator("#queue-report-details")
    assert details.is_hidden()
    page.locator("#queue-report .jobs-disclose").click()
    assert details.is_visible()
    assert int(details.locator('[data-count="report:all:succeeded"]').inner_text()) >= 1
    assert page.locator("#queue-report .jobs-disclose").get_attribute("aria-expanded") == "true"
    assert int(page.locator("[data-worker-total]").inner_text()) >= 1
    screenshot(page, "admin-queues-details")


def test_queues_page__charts_wait_and_run_times(screen_page: Any, demo_site: DemoSite) -> None:
    page = screen_page
    admin_login(page, demo_site)
    wait_for_job(page, submit(page, "report", {"rows": 50, "title": "Timed"}), "succeeded")
    page.goto("/admin/jobs/queue/")
    assert page.locator(".jobs-chart svg").count() == 3  # hour, day, and the week
    assert int(page.locator('[data-total="week-succeeded"]').inner_text()) >= 1
    row = page.locator('[data-timings="per-type"] [data-timing-row="report"]')
    assert row.is_visible() and row.locator('[data-timing="run-p95"]').inner_text() not in ("", "—")
    assert page.locator('[data-timings="per-day"] [data-timing-row]').count() == 7
    page.locator(".jobs-charts").first.scroll_into_view_if_needed()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    charts = page.locator("#content-main")
    charts.screenshot(path=str(SCREENSHOTS / "admin-queues-charts.png"))


def test_schedule_page__lists_its_recent_runs(page: Any, demo_site: DemoSite) -> None:
    admin_login(page, demo_site)
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    headers = {"Content-Type": "application/json", "X-CSRFToken": token}
    name = f"every-2s-{uuid.uuid4().hex[:6]}"
    created = page.request.post(
        "/api/schedules/",
        data=json.dumps(
            {
                "name": name,
                "type": "report",
                "payload": {"rows": 20, "title": "Scheduled"},
                "kind": "interval",
                "interval_seconds": 2,
            }
        ),
        headers=headers,
    )
    assert created.status == 201, created.text()
    schedule_id = created.json()["id"]
    deadline = time.monotonic() + 60
    while True:
        jobs = page.request.get(f"/api/jobs/?schedule={schedule_id}").json()
        runs = [j for j in jobs.get("results", []) if j.get("schedule") == schedule_id]
        if len([j for j in runs if j["status"] == "succeeded"]) >= 3:
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.5)
    disabled = page.request.patch(
        f"/api/schedules/{schedule_id}/", data=json.dumps({"enabled": False}), headers=headers
    )
    assert disabled.ok, disabled.text()
    page.goto(f"/admin/jobs/jobschedule/{schedule_id}/change/")
    table = page.locator("#recent-runs")
    assert table.locator("tr[data-run]").count() >= 3
    assert table.locator("tr[data-run] .jobs-badge--succeeded").count() >= 3
    with page.expect_navigation():
        table.locator(".jobs-runs-all a").click()
    assert f"schedule__id__exact={schedule_id}" in page.url
    assert page.locator("#result_list tbody tr").count() >= 3
    page.go_back()
    table.scroll_into_view_if_needed()
    screenshot(page, "admin-schedule-runs")
