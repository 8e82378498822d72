"""Who may call what (DESIGN.md "Permissions"): every endpoint needs a signed-in user; the operator endpoints need
the jobs app's model permissions, never ``is_staff`` alone (see jobs.access)."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from ..access import ScheduleAction, may_see_all_jobs, may_steer_all_jobs, may_use_schedules


def signed_in(request: Request) -> bool:
    return bool(request.user and request.user.is_authenticated)


class SeesAllJobs(BasePermission):
    """Queue stats: ``jobs.view_joblog`` (or change). Anonymous callers get 401 (or 403 without token auth)."""

    message = "You need the jobs.view_joblog permission."

    def has_permission(self, request: Request, view: Any) -> bool:
        return signed_in(request) and may_see_all_jobs(request.user)


class SteersAllJobs(BasePermission):
    """Pause, resume, requeue failed jobs: ``jobs.change_joblog``."""

    message = "You need the jobs.change_joblog permission."

    def has_permission(self, request: Request, view: Any) -> bool:
        return signed_in(request) and may_steer_all_jobs(request.user)


# What each schedule endpoint needs. DRF's DjangoModelPermissions lets any GET through; here reading needs view.
SCHEDULE_ACTIONS: dict[str, ScheduleAction] = {
    "list": "view",
    "retrieve": "view",
    "create": "add",
    "update": "change",
    "partial_update": "change",
    "run": "change",
    "destroy": "delete",
    "metadata": "view",  # OPTIONS
}


class SchedulePermissions(BasePermission):
    """``jobs.<view|add|change|delete>_jobschedule`` by endpoint; an endpoint not in the table needs change."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not signed_in(request):
            return False
        action = SCHEDULE_ACTIONS.get(getattr(view, "action", None) or "", "change")
        self.message = f"You need the jobs.{action}_jobschedule permission."
        return may_use_schedules(request.user, action)
