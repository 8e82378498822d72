"""Background jobs for Django on Redis and RQ: ``job_type`` registers, ``submit`` runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .exceptions import JobsError, PermanentError
    from .registry import job_type
    from .services import cancel_job, get_or_submit, retry_job, submit, submit_many

__all__ = [
    "job_type",
    "submit",
    "submit_many",
    "get_or_submit",
    "cancel_job",
    "retry_job",
    "PermanentError",
    "JobsError",
]

# Resolved lazily: importing models while Django loads apps would break app loading.
_EXPORTS = {
    "job_type": "registry",
    "submit": "services",
    "submit_many": "services",
    "get_or_submit": "services",
    "cancel_job": "services",
    "retry_job": "services",
    "PermanentError": "exceptions",
    "JobsError": "exceptions",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
