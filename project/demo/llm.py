"""A small client for OpenAI-compatible chat completions, streamed (server-sent events), on the standard library.

Errors are sorted for the job's retry policy: ``AIUnavailable`` (429, 408, 409, 5xx, timeouts, dropped connections,
a stream cut short) is worth retrying; any other refusal (400, 401, 403, 404, 422, ...) raises ``PermanentError``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPException, HTTPResponse
from typing import Any

from jobs import PermanentError

RETRYABLE_STATUSES = frozenset({408, 409, 429})  # and every 5xx


class AIUnavailable(Exception):
    """The AI service is busy or failing for now (rate limited, server error, timeout)."""


@dataclass
class StreamedCompletion:
    """What one streamed completion delivered so far."""

    text: str = ""
    finish_reason: str | None = None
    model: str = ""
    usage: dict[str, Any] = field(default_factory=dict)


def chat_completion_stream(
    base_url: str,
    api_key: str,
    body: dict[str, Any],
    *,
    timeout: float,
    completion: StreamedCompletion,
) -> Iterator[str]:
    """POST ``body`` (with ``stream: true``) to ``<base_url>/chat/completions``; yields each content delta.

    ``timeout`` bounds the connection and every wait for the next chunk. ``completion`` collects the text, the
    finish reason and the model name as they arrive.
    """
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        url, data=json.dumps({**body, "stream": True}).encode(), headers=headers, method="POST"
    )
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - the URL comes from settings
    except urllib.error.HTTPError as exc:
        raise _refusal(exc.code, _error_message(exc)) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ValueError):
            raise PermanentError(f"AI_BASE_URL is not a usable URL: {reason}") from None
        if isinstance(reason, TimeoutError):
            raise AIUnavailable(f"The AI service at {url} did not answer within {timeout:g} s.") from None
        raise AIUnavailable(f"Could not reach the AI service at {url}: {reason}") from None
    with response:
        yield from _read_events(response, completion)


def _read_events(response: HTTPResponse, completion: StreamedCompletion) -> Iterator[str]:
    try:
        for raw in response:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line.startswith("data:"):
                continue  # blank separators, comments (": ping"), event names
            data = line[5:].strip()
            if data == "[DONE]":
                return
            delta = _parse_chunk(data, completion)
            if delta:
                completion.text += delta
                yield delta
    except TimeoutError as exc:
        raise AIUnavailable(f"The AI service stopped sending for too long: {exc}") from None
    except (ConnectionError, HTTPException, OSError) as exc:
        raise AIUnavailable(f"The connection to the AI service broke: {exc}") from None
    if completion.finish_reason is None:
        raise AIUnavailable("The AI service ended the stream before the completion was finished.")


def _parse_chunk(data: str, completion: StreamedCompletion) -> str:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise AIUnavailable(f"The AI service sent a chunk that is not JSON: {data[:100]!r}") from None
    if not isinstance(chunk, dict):
        raise AIUnavailable("The AI service sent a chunk that is not a JSON object.")
    if "error" in chunk:
        error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
        raise AIUnavailable(f"The AI service failed while streaming: {error.get('message', error)}")
    completion.model = str(chunk.get("model") or completion.model)
    if isinstance(chunk.get("usage"), dict):
        completion.usage = chunk["usage"]
    delta = ""
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        content = (choice.get("delta") or {}).get("content")
        if isinstance(content, str):
            delta += content
        if choice.get("finish_reason"):
            completion.finish_reason = str(choice["finish_reason"])
    return delta


def _refusal(status: int, message: str) -> Exception:
    text = f"The AI service answered HTTP {status}: {message}"
    if status in RETRYABLE_STATUSES or status >= 500:
        return AIUnavailable(text)
    return PermanentError(text)


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the start of the body, else the reason."""
    try:
        raw = exc.read(10_000).decode("utf-8", errors="replace")
    except (OSError, HTTPException):
        raw = ""
    try:
        error = json.loads(raw).get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except (ValueError, AttributeError):
        pass
    return raw.strip()[:300] or str(exc.reason)
