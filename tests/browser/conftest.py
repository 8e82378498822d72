"""Browser tests: the real demo site (uvicorn, a worker, the scheduler) driven by headless Chromium.

The site runs as the README's demo does, from ``project.settings``, but on a free port, with a private
redis-server and a throwaway SQLite database, so a test run never touches var/. Chromium is the system's
(/usr/bin/chromium, Debian's package, which ``make test`` installs); Playwright never downloads a browser.
Screenshots land in artifacts/screenshots/ for CI to keep.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, start_redis_server

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
DEMO_USERNAME = DEMO_PASSWORD = "demo"
START_TIMEOUT = 60.0


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


class DemoSite:
    """The demo's processes; the web server can be killed and started again on the same port."""

    def __init__(self) -> None:
        self.var_dir = Path(tempfile.mkdtemp(prefix="jobs-browser-demo-"))
        self.redis_port = free_port()
        self.redis = start_redis_server(self.redis_port, str(self.var_dir))
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.username, self.password = DEMO_USERNAME, DEMO_PASSWORD
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DATABASE_URL": f"sqlite:///{self.var_dir / 'demo.sqlite3'}",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "MEDIA_ROOT": str(self.var_dir / "media"),
            "EMAIL_FILE_PATH": str(self.var_dir / "mail"),
            "STATIC_ROOT": str(self.var_dir / "static"),
            "DEMO_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
        }
        self.log_path = self.var_dir / "site.log"
        self.log = self.log_path.open("ab")
        self.web: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.others: list[subprocess.Popen[bytes]] = []

    def manage(self, *args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True)

    def start(self) -> None:
        self.manage("migrate", "--no-input")
        self.manage(
            "shell",
            "-c",
            f"from project.run_demo import ensure_demo_user; ensure_demo_user({self.password!r})",
        )
        self.worker = self._spawn([sys.executable, "manage.py", "jobs_worker"])
        self.others += [self.worker, self._spawn([sys.executable, "manage.py", "jobs_scheduler"])]
        self.start_web()

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_web(self) -> None:
        from project.run_demo import web_server_args

        self.web = self._spawn([sys.executable, *web_server_args(self.port), "--no-access-log"])
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{self.base_url}/login/", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.web.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"The demo web server did not come up; log:\n{self.output()}")
            time.sleep(0.1)

    def kill_web(self) -> None:
        """Kill the web server outright: every open socket drops, as in a crash or a redeploy."""
        assert self.web is not None
        os.killpg(self.web.pid, signal.SIGKILL)
        self.web.wait(10)

    def pause_worker(self) -> None:
        """Freeze the worker and its work horse (SIGSTOP to their process group): a running job stands still."""
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGSTOP)

    def resume_worker(self) -> None:
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGCONT)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-20_000:]

    def stop(self) -> None:
        for proc in [*self.others, *([self.web] if self.web else [])]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.others, *([self.web] if self.web else [])]:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.redis.terminate()
        self.redis.wait(10)
        self.log.close()
        shutil.rmtree(self.var_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def demo_site() -> Iterator[DemoSite]:
    site = DemoSite()
    try:
        site.start()
        yield site
    finally:
        site.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package (or set CHROMIUM).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, demo_site: DemoSite) -> Iterator[Any]:
    context = browser.new_context(base_url=demo_site.base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def login(page: Any, site: DemoSite, path: str = "/login/") -> None:
    """Sign in through the site's login form (the demo's, or the admin's with path="/admin/login/")."""
    page.goto(path)
    page.fill('input[name="username"]', site.username)
    page.fill('input[name="password"]', site.password)
    page.click('[type="submit"]')
    page.wait_for_load_state()


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
