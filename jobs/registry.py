"""@job_type and lookup by name: only what is registered here can ever run."""

from __future__ import annotations

import inspect
import json
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

from django.core.serializers.json import DjangoJSONEncoder
from rest_framework import serializers

from .conf import jobs_settings
from .exceptions import InvalidPayload, UnknownJobType

Handler = Callable[..., Any]
Isolation = Literal["process"] | None
H = TypeVar("H", bound=Handler)

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
RATE_PATTERN = re.compile(r"^(?P<count>[1-9]\d*)/(?P<unit>[smh])$")
RATE_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}

_UNSET: Any = object()


@dataclass(frozen=True)
class RateLimit:
    count: int
    period_seconds: int

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse "N/s", "N/m" or "N/h"; ValueError otherwise."""
        match = RATE_PATTERN.match(text) if isinstance(text, str) else None
        if not match:
            raise ValueError(f'rate limit must look like "10/s", "10/m" or "10/h", not {text!r}')
        return cls(int(match["count"]), RATE_UNIT_SECONDS[match["unit"]])


@dataclass(frozen=True)
class JobType:
    """A registered job type: its handler and every option that governs how it runs."""

    name: str
    handler: Handler
    queue: str
    payload: type[serializers.BaseSerializer[Any]] | None = None
    max_attempts: int = 3
    backoff: tuple[float, float] = (5, 300)
    timeout: int = 300
    rate_limit: str | None = None
    concurrency: int | None = None
    # At most this many of the type running at once per owner (ownerless jobs are not capped); the others wait.
    per_user_concurrency: int | None = None
    retention: timedelta = timedelta(days=30)
    staff_only: bool = False
    retry_on: tuple[type[BaseException], ...] = ()
    give_up_on: tuple[type[BaseException], ...] = ()
    # "process": each attempt runs in a forked child of its worker process, stopped by killing the child.
    isolation: Isolation = None
    # Top-level payload keys shown as "***" in job JSON to anybody without jobs.view_joblog (the owner included).
    sensitive: tuple[str, ...] = ()
    description: str = field(default="", compare=False)

    @property
    def parsed_rate_limit(self) -> RateLimit | None:
        return RateLimit.parse(self.rate_limit) if self.rate_limit else None

    def validate(self, payload: Any) -> dict[str, Any]:
        """Validated payload in its JSON form (what is stored); raises InvalidPayload."""
        return to_json(self.clean(payload))

    def clean(self, payload: Any) -> dict[str, Any]:
        """Validated payload with native values (what the handler receives); raises InvalidPayload."""
        if not isinstance(payload, Mapping):
            raise InvalidPayload({"payload": ["Expected a JSON object."]}, "The payload must be a JSON object.")
        if self.payload is None:
            return dict(payload)
        serializer = self.payload(data=dict(payload))
        if not serializer.is_valid():
            raise InvalidPayload(dict(serializer.errors))
        return dict(serializer.validated_data)

    def backoff_delay(self, failed_attempts: int) -> float:
        """Wait after the n-th failed attempt: min(cap, base * 2**(n-1)), equal jitter (half fixed, half random)."""
        base, cap = self.backoff
        ceiling = float(min(cap, base * 2.0 ** max(0, failed_attempts - 1)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def should_retry(self, exc: BaseException) -> bool:
        """Whether this error may be retried at all (attempts left are checked by the runner)."""
        from .exceptions import PermanentError

        if isinstance(exc, PermanentError) or isinstance(exc, self.give_up_on):
            return False
        return not self.retry_on or isinstance(exc, self.retry_on)


def to_json(value: Mapping[str, Any]) -> dict[str, Any]:
    # Validated data may hold datetimes, Decimals and UUIDs; SQL and Redis get plain JSON.
    return dict(json.loads(json.dumps(value, cls=DjangoJSONEncoder)))


_registry: dict[str, JobType] = {}
# Two registrations under one name are a configuration error reported by a system check, not a crash.
_duplicates: list[tuple[str, Handler]] = []


def job_type(
    name: str,
    *,
    queue: str | None = None,
    payload: type[serializers.BaseSerializer[Any]] | None = None,
    max_attempts: int = _UNSET,
    backoff: tuple[float, float] = _UNSET,
    timeout: int = _UNSET,
    rate_limit: str | None = None,
    concurrency: int | None = None,
    per_user_concurrency: int | None = None,
    retention: timedelta | int = _UNSET,
    staff_only: bool = False,
    retry_on: tuple[type[BaseException], ...] = (),
    give_up_on: tuple[type[BaseException], ...] = (),
    isolation: Isolation = None,
    sensitive: tuple[str, ...] = (),
) -> Callable[[H], H]:
    """Register the decorated ``handler(ctx, payload)`` as job type ``name``; options default from JOBS."""

    def register(handler: H) -> H:
        defaults = jobs_settings()
        retention_value = timedelta(days=defaults.DEFAULT_RETENTION_DAYS) if retention is _UNSET else retention
        spec = JobType(
            name=name,
            handler=handler,
            queue=queue or name,
            payload=payload,
            max_attempts=defaults.DEFAULT_MAX_ATTEMPTS if max_attempts is _UNSET else max_attempts,
            backoff=tuple(defaults.DEFAULT_BACKOFF) if backoff is _UNSET else backoff,  # type: ignore[arg-type]
            timeout=defaults.DEFAULT_TIMEOUT if timeout is _UNSET else timeout,
            rate_limit=rate_limit,
            concurrency=concurrency,
            per_user_concurrency=per_user_concurrency,
            retention=(timedelta(seconds=retention_value) if isinstance(retention_value, int) else retention_value),
            staff_only=staff_only,
            retry_on=tuple(retry_on),
            give_up_on=tuple(give_up_on),
            isolation=isolation,
            # A lone string is one key, not its letters.
            sensitive=(sensitive,) if isinstance(sensitive, str) else tuple(sensitive),
            description=inspect.getdoc(handler) or "",
        )
        existing = _registry.get(name)
        if (
            existing is not None
            and existing.handler is not handler
            and _qualname(existing.handler) != _qualname(handler)
        ):
            _duplicates.append((name, handler))
        else:
            _registry[name] = spec
        return handler

    return register


def _qualname(handler: Handler) -> str:
    return f"{getattr(handler, '__module__', '')}.{getattr(handler, '__qualname__', repr(handler))}"


def get(name: str) -> JobType:
    """The job type registered as ``name``; raises UnknownJobType."""
    try:
        return _registry[name]
    except (KeyError, TypeError):
        raise UnknownJobType(f"There is no job type named {name!r}.") from None


def find(name: str) -> JobType | None:
    """The job type registered as ``name``, or None."""
    return _registry.get(name)


def sensitive_keys(name: str) -> tuple[str, ...]:
    """The payload keys type ``name`` marks as sensitive; none for a type no longer registered."""
    job_type = _registry.get(name)
    return job_type.sensitive if job_type is not None else ()


def all_types() -> list[JobType]:
    return sorted(_registry.values(), key=lambda t: t.name)


def duplicates() -> list[tuple[str, Handler]]:
    return list(_duplicates)


def unregister(name: str) -> None:
    """Remove a type (tests that register throwaway types clean up with this)."""
    _registry.pop(name, None)
