"""Helpers of the demo's tests."""

from __future__ import annotations

import uuid
from typing import Any


class RecordingContext:
    """A handler context that records what the handler reports, for calling a handler directly.

    Job runs go through real workers (the ``drain`` fixture); this is for what a run keeps only in part, such as the
    sequence of progress stages, which the row coalesces.
    """

    def __init__(self, owner_id: int | None = None) -> None:
        self.job_id = str(uuid.uuid4())
        self.attempt = 1
        self.owner_id = owner_id
        self.calls: list[tuple[int, str, str]] = []
        self.failures: list[tuple[str, str]] = []
        self.stage = ""

    def progress(
        self,
        percent: float | None = None,
        message: str | None = None,
        *,
        stage: str | None = None,
        data: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        self.stage = stage or self.stage
        self.calls.append((int(percent or 0), message or "", self.stage))

    def is_canceled(self) -> bool:
        return False

    def item_failed(self, item: Any, error: Any) -> None:
        self.failures.append((str(item), str(error)))
