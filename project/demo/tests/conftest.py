"""Fixtures of the demo's tests. Run them with the demo's settings:

    .venv/bin/python -m pytest --ds=project.demo.tests.settings project/demo/tests

The real-Redis fixtures (redis_url, drain, workers, ...) come from the main suite's tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from jobs.models import JobLog
from tests.factories import make_user

pytest_plugins = ["tests.conftest"]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("DJANGO_SETTINGS_MODULE") != "project.demo.tests.settings":
        raise pytest.UsageError("The demo's tests need their settings: add --ds=project.demo.tests.settings")


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return Path(settings.MEDIA_ROOT)


@pytest.fixture
def user(transactional_db: None) -> Any:
    return make_user("ada")


@pytest.fixture
def client_for(transactional_db: None) -> Callable[[Any], Client]:
    def login(user: Any) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return login


@pytest.fixture
def run_until_done(drain: Callable[..., None]) -> Callable[..., JobLog]:
    """Run workers in-process until the job is finished; the job as it ended."""

    def run(job: JobLog, timeout: float = 30) -> JobLog:
        drain(lambda: JobLog.objects.get(pk=job.pk).is_finished, timeout=timeout)
        return JobLog.objects.get(pk=job.pk)

    return run


class FakeAI:
    """A real HTTP server speaking OpenAI's chat-completions protocol, scripted per test.

    ``script`` is a list of answers, one per request in order (the last repeats): ``"stream"`` (200, streamed
    sections), ``429``, ``500``, ``400``, ``401``, ``"slow"`` (sleeps longer than AI_TIMEOUT before answering),
    ``"stall"`` (starts streaming, then stops sending), ``"cut"`` (ends the stream early).
    """

    def __init__(self) -> None:
        self.script: list[Any] = ["stream"]
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                try:
                    self._answer()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting: what "slow" and "stall" are for

            def _answer(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                answer = fake.script[min(len(fake.requests), len(fake.script)) - 1]
                if answer == "slow":
                    time.sleep(float(django_settings.AI_TIMEOUT) + 1.5)
                    answer = "stream"
                if isinstance(answer, int):
                    self._json(answer, {"error": {"message": f"scripted {answer}", "type": "test", "code": None}})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                sections = ["Alpha", "Beta", "Gamma"]
                for index, title in enumerate(sections):
                    self._event({"choices": [{"index": 0, "delta": {"content": f"## {title}\n\nText {index}.\n\n"}}]})
                    if answer == "stall" and index == 1:
                        time.sleep(float(django_settings.AI_TIMEOUT) + 1.5)
                        return
                    if answer == "cut" and index == 1:
                        return
                self._event({"model": "fake-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, chunk: dict[str, Any]) -> None:
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()

            def _json(self, status: int, data: dict[str, Any]) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler


@pytest.fixture
def fake_ai(settings: Any) -> Iterator[FakeAI]:
    server = FakeAI()
    settings.AI_BASE_URL = server.base_url
    settings.AI_API_KEY = "test-key"
    settings.AI_MODEL = "fake-1"
    yield server
    server.close()
