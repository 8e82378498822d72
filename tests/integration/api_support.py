"""Helpers for the REST API tests: authenticated clients and a snapshot of everything a request could change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from jobs import registry
from jobs.models import JobEvent, JobLog, JobSchedule
from jobs.transport.connections import get_connection
from jobs.transport.queues import queue_lengths

JOBS_URL = "/api/jobs/"

# The job JSON of DESIGN.md, written out here rather than read from the serializer: the tests state the contract.
JOB_KEYS = {
    "id",
    "type",
    "queue",
    "priority",
    "status",
    "payload",
    "progress",
    "result",
    "error",
    "attempts",
    "max_attempts",
    "failed_items",
    "failed_items_count",
    "created_at",
    "enqueued_at",
    "run_at",
    "started_at",
    "finished_at",
    "owner",
    "schedule",
    "status_url",
    "ws_url",
}


def token_client(user: Any) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def session_client(user: Any, *, enforce_csrf: bool = False) -> APIClient:
    client = APIClient(enforce_csrf_checks=enforce_csrf)
    client.force_login(user)
    return client


def job_url(job: Any, action: str = "") -> str:
    job_id = job["id"] if isinstance(job, dict) else getattr(job, "pk", job)
    return f"{JOBS_URL}{job_id}/" + (f"{action}/" if action else "")


@dataclass(frozen=True)
class State:
    jobs: int
    events: int
    schedules: int
    rq_jobs: int
    waiting: int
    statuses: tuple[tuple[str, str], ...]


def state() -> State:
    """Rows, rq job hashes and queue lengths: a 4xx must leave all of them as they were."""
    conn = get_connection()
    names = {t.queue for t in registry.all_types()}
    return State(
        jobs=JobLog.objects.count(),
        events=JobEvent.objects.count(),
        schedules=JobSchedule.objects.count(),
        rq_jobs=len(conn.keys("rq:job:*")),
        waiting=sum(sum(queue_lengths(name).values()) for name in names),
        statuses=tuple((str(pk), status) for pk, status in JobLog.objects.order_by("pk").values_list("pk", "status")),
    )
