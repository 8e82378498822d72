"""Who may act on other users' jobs and on schedules: Django model permissions, one answer for every surface.

DESIGN.md "Permissions": the REST API, the websockets, the admin and the job JSON ask here, so the same power needs
the same permission everywhere. Superusers have every permission (Django's ModelBackend); ``is_staff`` grants
nothing by itself: a staff user without the permission is a plain user (own jobs only). Owners need no permission
for their own jobs; that rule lives with the callers, which know the job.

No model import: models.visible_to() and job_json use this, so it sits below them in the layers.
"""

from __future__ import annotations

from typing import Any, Literal

ScheduleAction = Literal["view", "add", "change", "delete"]


def has_jobs_perm(user: Any, codename: str) -> bool:
    """``user.has_perm("jobs.<codename>")`` for a signed-in, active user; False for anonymous or None."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    return bool(user.has_perm(f"jobs.{codename}"))


def may_see_all_jobs(user: Any) -> bool:
    """Other users' jobs, events, streams and tracebacks, queue stats, health details: ``view_joblog``.

    The change permission includes viewing, as in the admin.
    """
    return has_jobs_perm(user, "view_joblog") or has_jobs_perm(user, "change_joblog")


def may_steer_all_jobs(user: Any) -> bool:
    """Cancel and retry other users' jobs; pause, resume, requeue and empty queues: ``change_joblog``."""
    return has_jobs_perm(user, "change_joblog")


def may_steer_job(user: Any, owner_id: Any) -> bool:
    """Cancel or retry one job: its owner always, anybody else with ``change_joblog``."""
    mine = owner_id is not None and owner_id == getattr(user, "pk", None) and getattr(user, "is_authenticated", False)
    return bool(mine) or may_steer_all_jobs(user)


def may_use_schedules(user: Any, action: ScheduleAction) -> bool:
    """``<action>_jobschedule``; reading is also allowed by the change permission, as in the admin."""
    if action == "view":
        return has_jobs_perm(user, "view_jobschedule") or has_jobs_perm(user, "change_jobschedule")
    return has_jobs_perm(user, f"{action}_jobschedule")
