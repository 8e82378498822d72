"""The demo's local AI model: an OpenAI-compatible chat-completions endpoint at /demo-llm/v1/, so the
ai-generation job works offline. It is no language model: it writes deterministic text from the prompt's words.

It checks the API key (``DEMO_LLM_API_KEY``), answers OpenAI-style errors, streams server-sent events word by word
(``DEMO_LLM_DELAY`` apart), and can be told to fail so that the job's retries can be watched: a prompt containing
``[simulate 429]`` or ``[simulate 500]`` is refused twice (per web process), then answered; ``[simulate 400]`` is
always refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

MODEL = "demo-local"
SIMULATE_PATTERN = re.compile(r"\[simulate (429|500|400)\]", re.IGNORECASE)
SIMULATED_FAILURES = 2  # per prompt, for 429 and 500
SECTIONS_PATTERN = re.compile(r"exactly (\d+) sections", re.IGNORECASE)
TOKEN_PATTERN = re.compile(r"[A-Za-z][A-Za-z'-]*|[^\sA-Za-z]+")
STOPWORDS = frozenset(
    "the and for with that this from into about your you are was were will what when where which who how why "
    "write explain describe give make please some more most than then them they their there these those our out "
    "can could should would shall may might must have has had not but all any each every its it's over under "
    "post article blog section sections short long brief text guide guides tell".split()
)
TITLES = [
    "Overview",
    "Why it matters",
    "How it works",
    "Getting started",
    "A worked example",
    "Common pitfalls",
    "Good practice",
    "Next steps",
    "Further reading",
    "Summary",
]
SENTENCES = [
    "{Topic} is easier to reason about once you name the moving parts.",
    "Most teams meet {topic} first through {other}, and that is a fine place to start.",
    "Keep {topic} small at first: one clear goal beats three vague ones.",
    "The useful question is not whether {topic} works, but when it stops working.",
    "Measure {topic} before and after each change, so that {other} stays honest.",
    "Write down what {topic} should never do; it saves a long argument later.",
    "A checklist for {topic} fits on one page, and {other} deserves a line on it.",
    "When {topic} and {other} disagree, trust the one you can test.",
    "Readers remember a concrete case of {topic} far longer than a definition.",
    "Automate the boring part of {topic} and review the rest by hand.",
]

_failures: dict[str, int] = {}
_failures_lock = threading.Lock()


def topics_of(prompt: str) -> list[str]:
    """The prompt's phrases left between its small words: "a short guide to background jobs in Django" gives
    ["guide", "background jobs", "Django"]."""
    phrases: list[str] = []
    current: list[str] = []
    for position, token in enumerate(TOKEN_PATTERN.findall(SIMULATE_PATTERN.sub(" ", prompt))):
        keep = token[0].isalpha() and len(token) > 2 and token.lower() not in STOPWORDS
        if keep and len(current) < 3:
            current.append(token.lower() if position == 0 else token)  # a capital that only starts the prompt
            continue
        if current:
            phrases.append(" ".join(current))
        current = [token] if keep else []
    if current:
        phrases.append(" ".join(current))
    return list({phrase.lower(): phrase for phrase in phrases}.values()) or ["background jobs"]


def compose(prompt: str, sections: int) -> str:
    """The demo model's answer: ``sections`` Markdown sections about the prompt's phrases, the same every time."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    topics = topics_of(prompt)
    first = rng.randrange(len(TITLES))
    parts = []
    for index in range(sections):
        title = TITLES[(first + index) % len(TITLES)]
        topic = topics[index % len(topics)]
        other = topics[(index + 1) % len(topics)] if len(topics) > 1 else "the rest of the system"
        lines = [
            sentence.format(topic=topic, Topic=topic[:1].upper() + topic[1:], other=other)
            for sentence in rng.sample(SENTENCES, 3)
        ]
        parts.append(f"## {title}\n\n{' '.join(lines)}\n")
    return "\n".join(parts)


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error") -> JsonResponse:
    return JsonResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status)


def _simulated_failure(prompt: str) -> JsonResponse | None:
    match = SIMULATE_PATTERN.search(prompt)
    if match is None:
        return None
    status = int(match.group(1))
    if status == 400:
        return _error(400, "The demo model was asked to refuse this prompt ([simulate 400]).", "simulated")
    with _failures_lock:
        seen = _failures.get(prompt, 0)
        _failures[prompt] = seen + 1
    if seen >= SIMULATED_FAILURES:
        return None
    if status == 429:
        response = _error(429, "Rate limit reached for the demo model ([simulate 429]).", "rate_limit_exceeded")
        response["Retry-After"] = "1"
        return response
    return _error(500, "The demo model failed ([simulate 500]).", "server_error", "server_error")


@csrf_exempt
def chat_completions(request: HttpRequest) -> HttpResponseBase:
    """POST /demo-llm/v1/chat/completions: an OpenAI-style chat completion, streamed when ``stream`` is true."""
    if request.method != "POST":
        return _error(405, "Use POST.", "method_not_allowed")
    if request.headers.get("Authorization", "") != f"Bearer {settings.DEMO_LLM_API_KEY}":
        return _error(401, "Incorrect API key provided.", "invalid_api_key")
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return _error(400, "The request body is not JSON.", "invalid_json")
    if not isinstance(body, dict):
        return _error(400, "The request body must be a JSON object.", "invalid_json")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return _error(400, "'messages' must be a non-empty list of messages.", "invalid_messages")
    if body.get("model") != MODEL:
        return _error(
            404, f"The model {body.get('model')!r} does not exist; this server has {MODEL!r}.", "model_not_found"
        )
    prompt = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    if (failure := _simulated_failure(prompt)) is not None:
        return failure
    system = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    found = SECTIONS_PATTERN.search(system)
    sections = min(10, max(1, int(found.group(1)))) if found else 3
    text = compose(prompt, sections)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if not body.get("stream"):
        return JsonResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage,
            }
        )
    events = _events(completion_id, created, text, usage)
    delay = float(settings.DEMO_LLM_DELAY)
    stream: Iterator[bytes] | AsyncIterator[bytes]
    # Served by an ASGI server, the stream must be asynchronous; by WSGI (runserver, the test client), synchronous.
    stream = _paced_async(events, delay) if isinstance(request, ASGIRequest) else _paced(events, delay)
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _events(completion_id: str, created: int, text: str, usage: dict[str, int]) -> list[bytes]:
    def event(delta: dict[str, str], finish: str | None = None, **extra: Any) -> bytes:
        chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(chunk)}\n\n".encode()

    words = re.findall(r"\S+\s*", text)
    return [
        event({"role": "assistant", "content": ""}),
        *(event({"content": word}) for word in words),
        event({}, "stop", usage=usage),
        b"data: [DONE]\n\n",
    ]


def _paced(events: list[bytes], delay: float) -> Iterator[bytes]:
    for index, chunk in enumerate(events):
        if index and delay:
            time.sleep(delay)
        yield chunk


async def _paced_async(events: list[bytes], delay: float) -> AsyncIterator[bytes]:
    for index, chunk in enumerate(events):
        if index and delay:
            await asyncio.sleep(delay)
        yield chunk


def models(request: HttpRequest) -> JsonResponse:
    """GET /demo-llm/v1/models: the one model this server has."""
    return JsonResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "jobs-demo"}]})
