"""Literals and TypedDicts shared across modules and process boundaries."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

Priority = Literal["critical", "high", "normal", "low"]
# Strict order: workers listen to every critical queue before any high one, and so on.
PRIORITIES: tuple[Priority, ...] = ("critical", "high", "normal", "low")


class FailedItem(TypedDict):
    item: str
    error: str


class ProgressFrame(TypedDict):
    type: Literal["progress"]
    job_id: str
    percent: int
    message: str
    stage: str
    data: dict[str, Any]
    at: str


class StatusFrame(TypedDict):
    type: Literal["status"]
    job_id: str
    status: str
    attempts: int
    result: Any
    error: dict[str, str] | None
    at: str
