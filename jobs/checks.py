"""System checks: JOBS settings (jobs.E00x, jobs.W001) and registered job types (jobs.E01x)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from rest_framework import serializers

from . import registry
from .conf import KNOWN_KEYS, JobsSettings, user_settings
from .registry import NAME_PATTERN, RateLimit

# What DRF's SimpleRateThrottle.parse_rate() understands: it reads the count and the unit's first letter.
SUBMIT_RATE_PATTERN = re.compile(r"^[1-9]\d*/[smhd][a-z]*$")
# A socket whose user logged out or lost the permission is closed within this long, whatever the setting.
MAX_SOCKET_RECHECK = 60


def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    raw = user_settings()
    if unknown := set(raw) - KNOWN_KEYS:
        errors.append(Error(f"Unknown JOBS keys: {sorted(unknown)}.", hint="See jobs/conf.py.", id="jobs.E001"))
    url = raw.get("REDIS_URL")
    if url is not None and not (isinstance(url, str) and url.split("://", 1)[0] in {"redis", "rediss", "unix"}):
        errors.append(
            Error(
                f"JOBS['REDIS_URL'] must be a redis://, rediss:// or unix:// URL, not {url!r}.",
                hint="Leave it unset (None) for the embedded Redis.",
                id="jobs.E002",
            )
        )
    defaults = JobsSettings()
    for key in (
        "DEFAULT_MAX_ATTEMPTS",
        "DEFAULT_TIMEOUT",
        "MAX_PAYLOAD_BYTES",
        "DEFAULT_RETENTION_DAYS",
        "SCHEDULE_CATCH_UP",
        "MAX_SOCKETS_PER_USER",
        "MAX_UPLOAD_BYTES",
    ):
        value = raw.get(key, getattr(defaults, key))
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(Error(f"JOBS['{key}'] must be a whole number of at least 1, not {value!r}.", id="jobs.E003"))
    for key in (
        "PROGRESS_MIN_INTERVAL",
        "PROGRESS_PUBLISH_INTERVAL",
        "DASHBOARD_INTERVAL",
        "CANCEL_POLL_INTERVAL",
        "CANCEL_GRACE",
        "SHUTDOWN_GRACE",
        "HEARTBEAT_INTERVAL",
        "RECONCILE_GRACE",
        "SCHEDULER_INTERVAL",
        "RECONCILE_EVERY",
    ):
        value = raw.get(key, getattr(defaults, key))
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            errors.append(
                Error(f"JOBS['{key}'] must be a number of seconds, 0 or more, not {value!r}.", id="jobs.E004")
            )
    for key in ("REDIS_SOCKET_TIMEOUT", "REDIS_CONNECT_TIMEOUT"):
        value = raw.get(key, getattr(defaults, key))
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
            errors.append(
                Error(
                    f"JOBS['{key}'] must be a number of seconds above 0 (at most 3600), not {value!r}.",
                    hint="A few seconds: a Redis that stops answering then fails a call instead of hanging it.",
                    id="jobs.E006",
                )
            )
    recheck = raw.get("SOCKET_RECHECK_INTERVAL", defaults.SOCKET_RECHECK_INTERVAL)
    if isinstance(recheck, bool) or not isinstance(recheck, int | float) or not 0 < recheck <= MAX_SOCKET_RECHECK:
        errors.append(
            Error(
                f"JOBS['SOCKET_RECHECK_INTERVAL'] must be a number of seconds above 0 and at most "
                f"{MAX_SOCKET_RECHECK}, not {recheck!r}.",
                hint="A websocket keeps receiving frames for up to this long after its user logs out.",
                id="jobs.E007",
            )
        )
    errors += _backoff_errors(raw.get("DEFAULT_BACKOFF", defaults.DEFAULT_BACKOFF), "JOBS['DEFAULT_BACKOFF']")
    for key in ("UPLOAD_EXTENSIONS", "UPLOAD_CONTENT_TYPES"):
        value = raw.get(key, getattr(defaults, key))
        if not (isinstance(value, tuple | list) and all(isinstance(v, str) and v == v.lower() for v in value)):
            errors.append(
                Error(
                    f"JOBS['{key}'] must be a tuple of lowercase strings, not {value!r}.",
                    hint='For example (".csv", ".txt") and ("text/csv", "text/plain"); empty refuses every upload.',
                    id="jobs.E008",
                )
            )
    rate = raw.get("SUBMIT_RATE", defaults.SUBMIT_RATE)
    if rate is not None and not (isinstance(rate, str) and SUBMIT_RATE_PATTERN.match(rate)):
        errors.append(
            Error(
                f"JOBS['SUBMIT_RATE'] must be a DRF throttle rate such as '120/minute', or None, not {rate!r}.",
                hint="A count, a slash, then second, minute, hour or day (s, m, h, d).",
                id="jobs.E005",
            )
        )
    if not getattr(settings, "CHANNEL_LAYERS", None):
        errors.append(
            Warning(
                "No CHANNEL_LAYERS setting: live progress over websockets is off (REST status still works).",
                hint='Add CHANNEL_LAYERS = {"default": {"BACKEND": "jobs.live.layer.JobsChannelLayer"}}.',
                id="jobs.W001",
            )
        )
    return errors


def _backoff_errors(backoff: Any, where: str) -> list[CheckMessage]:
    ok = (
        isinstance(backoff, tuple | list)
        and len(backoff) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in backoff)
        and backoff[0] <= backoff[1]
    )
    if ok:
        return []
    return [
        Error(
            f"{where} must be (base_seconds, cap_seconds) with 0 <= base <= cap, not {backoff!r}.",
            hint="For example backoff=(5, 300): waits of about 5, 10, 20 ... seconds, never above 300.",
            id="jobs.E014",
        )
    ]


def check_job_types(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name, handler in registry.duplicates():
        errors.append(
            Error(
                f"Job type {name!r} is registered twice ({handler.__module__}.{handler.__qualname__} is the second).",
                hint="Give every job type a unique name.",
                id="jobs.E010",
            )
        )
    for job_type in registry.all_types():
        label = f"Job type {job_type.name!r}"
        if not NAME_PATTERN.match(job_type.name):
            errors.append(
                Error(
                    f"{label}: names are lowercase letters, digits, '-' and '_' (at most 100 characters).",
                    id="jobs.E011",
                )
            )
        if not NAME_PATTERN.match(job_type.queue):
            errors.append(Error(f"{label}: queue {job_type.queue!r} is not a valid queue name.", id="jobs.E012"))
        if job_type.payload is not None and not (
            isinstance(job_type.payload, type) and issubclass(job_type.payload, serializers.BaseSerializer)
        ):
            errors.append(
                Error(f"{label}: payload must be a DRF Serializer class, not {job_type.payload!r}.", id="jobs.E013")
            )
        errors += _backoff_errors(job_type.backoff, f"{label}: backoff")
        if not _positive_int(job_type.max_attempts):
            errors.append(
                Error(f"{label}: max_attempts must be 1 or more, not {job_type.max_attempts!r}.", id="jobs.E015")
            )
        if not _positive_int(job_type.timeout):
            errors.append(
                Error(f"{label}: timeout must be whole seconds, 1 or more, not {job_type.timeout!r}.", id="jobs.E016")
            )
        if job_type.rate_limit is not None:
            try:
                RateLimit.parse(job_type.rate_limit)
            except ValueError as exc:
                errors.append(Error(f"{label}: {exc}.", id="jobs.E017"))
        if job_type.concurrency is not None and not _positive_int(job_type.concurrency):
            errors.append(
                Error(f"{label}: concurrency must be 1 or more, not {job_type.concurrency!r}.", id="jobs.E018")
            )
        if job_type.per_user_concurrency is not None and not _positive_int(job_type.per_user_concurrency):
            errors.append(
                Error(
                    f"{label}: per_user_concurrency must be 1 or more, or None, not {job_type.per_user_concurrency!r}.",
                    id="jobs.E023",
                )
            )
        if not isinstance(job_type.retention, timedelta) or job_type.retention.total_seconds() < 1:
            errors.append(Error(f"{label}: retention must be a positive timedelta or seconds.", id="jobs.E019"))
        for option in ("retry_on", "give_up_on"):
            classes = getattr(job_type, option)
            if not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
                errors.append(Error(f"{label}: {option} must list exception classes.", id="jobs.E020"))
        if job_type.isolation not in (None, "process"):
            errors.append(
                Error(f'{label}: isolation must be None or "process", not {job_type.isolation!r}.', id="jobs.E022")
            )
        if not all(isinstance(key, str) and key for key in job_type.sensitive):
            errors.append(Error(f"{label}: sensitive must list payload keys (non-empty strings).", id="jobs.E024"))
        elif isinstance(job_type.payload, type) and issubclass(job_type.payload, serializers.Serializer):
            fields = _payload_fields(job_type.payload)
            if fields is not None and (unknown := sorted(set(job_type.sensitive) - fields)):
                errors.append(
                    Error(f"{label}: sensitive names keys the payload does not have: {unknown}.", id="jobs.E024")
                )
        if not callable(job_type.handler):
            errors.append(Error(f"{label}: the handler is not callable.", id="jobs.E021"))
    return errors


def _payload_fields(serializer_class: type[Any]) -> set[str] | None:
    """The payload keys a serializer class declares, or None if it cannot say without arguments."""
    try:
        return set(serializer_class().fields)
    except Exception:  # noqa: BLE001 - a serializer that needs arguments: E013's business, not ours
        return None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
