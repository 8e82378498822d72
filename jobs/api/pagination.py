"""The API's pagination: cursor pages whose bad cursor or page size is a documented 400, not a 404 or a 500."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request

INVALID_CURSOR = "Invalid cursor: use the next or previous link of a page."


class StrictCursorPagination(CursorPagination):
    """DRF's cursor pagination, but a bad ``cursor`` or ``page_size`` is a 400 (DRF: 404, and the default size).

    A page_size above max_page_size is still capped, not refused.
    """

    page_size_query_param = "page_size"
    page_size: int
    max_page_size: int

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get("page_size")
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
            raise ValidationError({"page_size": [f"A whole number from 1 (at most {self.max_page_size} are given)."]})
        return min(int(raw), self.max_page_size)

    def decode_cursor(self, request: Request) -> Cursor | None:
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError({"cursor": [INVALID_CURSOR]}) from None

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        try:
            return super().paginate_queryset(queryset, request, view)
        except (DjangoValidationError, ValueError, TypeError, OverflowError):
            # A cursor that decodes but whose position is no value of the ordering column ("x" for a date).
            raise ValidationError({"cursor": [INVALID_CURSOR]}) from None

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": "cursor",
                "required": False,
                "in": "query",
                "description": "The next or previous link's cursor; anything else is a 400.",
                "schema": {"type": "string"},
            },
            {
                "name": "page_size",
                "required": False,
                "in": "query",
                "description": f"Results per page (default {self.page_size}, larger than {self.max_page_size} is "
                f"capped at {self.max_page_size}).",
                "schema": {"type": "integer", "minimum": 1},
            },
        ]


class NewestFirst(StrictCursorPagination):
    # Cursor, not page numbers: stable while new jobs arrive, and no COUNT(*) over a large table.
    ordering = ("-created_at", "-id")
    page_size = 20
    max_page_size = 100


class OldestFirst(StrictCursorPagination):
    ordering = ("created_at", "id")
    page_size = 100
    max_page_size = 1000


class ByName(StrictCursorPagination):
    ordering = ("name",)
    page_size = 50
    max_page_size = 500
