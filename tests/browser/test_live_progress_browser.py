"""The end-user progress page in Chromium: live over the websocket, surviving a dropped socket, polling without one."""

from __future__ import annotations

import re
from typing import Any

from tests.browser.conftest import DemoSite, login, screenshot

# Collects what the widget showed over time, so a test can tell live movement from a single jump at the end.
RECORDER = """
window.__seen = {percents: [], links: []};
document.addEventListener("DOMContentLoaded", () => {
  const root = document.querySelector("[data-job-progress]");
  if (!root) return;
  const bar = root.querySelector('[role="progressbar"]');
  new MutationObserver(() => {
    const seen = window.__seen;
    const percent = Number(bar.getAttribute("aria-valuenow"));
    if (seen.percents[seen.percents.length - 1] !== percent) seen.percents.push(percent);
    const link = root.dataset.link;
    if (link && seen.links[seen.links.length - 1] !== link) seen.links.push(link);
  }).observe(root, {attributes: true, subtree: true, childList: true, characterData: true});
});
"""


def start_report(page: Any, rows: int, title: str) -> str:
    page.goto("/")
    form = page.locator("#form-report")
    form.locator('[name="rows"]').fill(str(rows))
    form.locator('[name="title"]').fill(title)
    form.locator('[type="submit"]').click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    return str(page.url.rstrip("/").rsplit("/", 1)[-1])


def wait_for_status(page: Any, status: str, timeout: float = 60_000) -> None:
    page.wait_for_selector(f'[data-job-progress][data-status="{status}"]', timeout=timeout)


def test_progress_page__bar_moves_live_to_100_and_the_result_appears(page: Any, demo_site: DemoSite) -> None:
    page.add_init_script(RECORDER)
    login(page, demo_site)
    job_id = start_report(page, 60_000, "Live progress")

    page.wait_for_selector('[data-job-progress][data-link="live"]')
    wait_for_status(page, "succeeded")
    widget = page.locator("[data-job-progress]")
    assert widget.locator('[role="progressbar"]').get_attribute("aria-valuenow") == "100"
    assert widget.locator('[data-field="percent"]').inner_text() == "100%"
    result = widget.locator('[data-field="result"]')
    result.wait_for(state="visible")
    assert f'"path": "reports/{job_id}.csv"' in result.inner_text()
    assert page.locator("text=Download the CSV").is_visible()
    assert page.locator("button:has-text('Cancel')").is_hidden()

    seen = page.evaluate("window.__seen")
    # Several intermediate values arrived over the socket before the end, without any reload.
    assert len([p for p in seen["percents"] if 0 < p < 100]) >= 3, seen
    assert seen["percents"] == sorted(seen["percents"]), seen
    assert seen["links"][0] == "live" and seen["links"][-1] == "finished", seen
    screenshot(page, "progress-page-succeeded")


def test_progress_page__reconnects_after_the_server_drops_the_socket(page: Any, demo_site: DemoSite) -> None:
    page.add_init_script(RECORDER)
    login(page, demo_site)
    start_report(page, 100_000, "Reconnect")
    page.wait_for_selector('[data-job-progress][data-link="live"]')
    page.wait_for_function("window.__seen.percents.some(p => p > 0)")

    # The job stands still while the server is away, so it cannot finish before the page reconnects (a slow
    # restart let it finish first, and the page then showed the result from a poll instead of going live).
    demo_site.pause_worker()
    try:
        demo_site.kill_web()  # every socket drops at once, as in a crash or a redeploy
        page.wait_for_function("window.__seen.links.some(l => l !== 'live')")
        screenshot(page, "progress-page-server-gone")
        demo_site.start_web()
        try:
            page.wait_for_function("window.__seen.links.lastIndexOf('live') > 0", timeout=30_000)
        except Exception:
            print(page.evaluate("window.__seen"), demo_site.output()[-3000:])
            raise
    finally:
        demo_site.resume_worker()
    wait_for_status(page, "succeeded", timeout=120_000)
    seen = page.evaluate("window.__seen")
    dropped = seen["links"].index("live", 1) if "live" in seen["links"][1:] else -1
    assert dropped > 0, f"the widget never came back to live after the drop: {seen['links']}"
    assert seen["percents"][-1] == 100, seen
    screenshot(page, "progress-page-after-reconnect")


def test_progress_page__falls_back_to_polling_when_websockets_fail(page: Any, demo_site: DemoSite) -> None:
    # Every websocket is refused, as behind a proxy that does not pass them on.
    page.route_web_socket(re.compile(r".*/ws/.*"), lambda socket: socket.close())
    page.add_init_script(RECORDER)
    login(page, demo_site)
    start_report(page, 100_000, "Polling")

    # The recorder, not the live attribute: a fast job can finish on the first poll, and "finished" then
    # replaces "polling" before a selector wait would look at it.
    page.wait_for_function("window.__seen.links.includes('polling')")
    wait_for_status(page, "succeeded")
    assert page.locator('[data-job-progress] [data-field="result"]').is_visible()
    seen = page.evaluate("window.__seen")
    assert "live" not in seen["links"], seen
    assert seen["links"][-1] == "finished", seen
    assert seen["percents"][-1] == 100, seen
    screenshot(page, "progress-page-polling")
