"""Build test data with real rows."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from jobs.models import JobLog


def make_user(username: str = "alice", **overrides: Any) -> Any:
    return get_user_model().objects.create_user(username=username, password="pw-" + username, **overrides)


def make_job(**overrides: Any) -> JobLog:
    fields: dict[str, Any] = {"job_type": "echo", "queue": "echo", "payload": {}, **overrides}
    return JobLog.objects.create(**fields)
