"""Who may call what: every endpoint needs a signed-in user, and the operator endpoints need staff."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request


class IsStaff(BasePermission):
    """Signed-in staff only; anonymous callers get 401 (or 403 without token auth), others 403."""

    message = "Only staff may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and getattr(user, "is_staff", False))
