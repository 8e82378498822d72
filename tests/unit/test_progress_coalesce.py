"""The publisher's coalescing: newer progress replaces older progress of the same job; status frames all go."""

from __future__ import annotations

from typing import Any

from jobs.live.publish import coalesce, frame_groups


def progress(job: str, percent: int) -> tuple[dict[str, Any], list[str]]:
    return {"type": "progress", "job_id": job, "percent": percent}, [f"job.{job}"]


def status(job: str, value: str) -> tuple[dict[str, Any], list[str]]:
    return {"type": "status", "job_id": job, "status": value}, [f"job.{job}"]


def test_coalesce__keeps_the_newest_progress_per_job_in_order():
    batch = [progress("a", 1), progress("b", 1), progress("a", 2), status("a", "running"), progress("a", 3)]
    kept = [(frame["job_id"], frame.get("percent", frame.get("status"))) for frame, _ in coalesce(batch)]
    assert kept == [("b", 1), ("a", "running"), ("a", 3)]


def test_coalesce__never_drops_a_status_frame():
    batch = [status("a", "queued"), status("a", "running"), progress("a", 100), status("a", "succeeded")]
    assert [frame.get("status") for frame, _ in coalesce(batch)] == ["queued", "running", None, "succeeded"]


def test_frame_groups__owner_group_only_for_owned_jobs():
    assert frame_groups("j1", 7) == ["job.j1", "dashboard", "user.7"]
    assert frame_groups("j1", None) == ["job.j1", "dashboard"]
