"""The app's own job types, found by the same autodiscovery as everybody's."""

from __future__ import annotations

from typing import Any

from .registry import job_type
from .retention import cleanup_finished_jobs


@job_type("jobs-cleanup", queue="jobs-maintenance", staff_only=True, max_attempts=1, timeout=3600)
def cleanup(ctx: Any, payload: dict[str, Any]) -> dict[str, int]:
    """Delete finished jobs past their type's retention, and old uploads (scheduled daily by the migration that adds
    it)."""

    report = cleanup_finished_jobs()
    return {
        "jobs_deleted": report.jobs_deleted,
        "events_deleted": report.events_deleted,
        "uploads_deleted": report.uploads_deleted,
    }
