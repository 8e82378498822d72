"""ai-generation: asks an OpenAI-compatible model (a local stand-in by default) for a text, streaming progress."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from rest_framework import serializers

from jobs import job_type

from .. import llm

HEADING = re.compile(r"^#{1,3}\s+(.+?)\s*#*\s*$\n", re.MULTILINE)


class AIGenerationPayload(serializers.Serializer[Any]):
    prompt = serializers.CharField(min_length=3, max_length=4000)
    sections = serializers.IntegerField(min_value=1, max_value=8, default=3)
    temperature = serializers.FloatField(min_value=0, max_value=2, default=0.7)


def ai_is_local() -> bool:
    """Whether ai-generation talks to the demo's own model (AI_BASE_URL unset) rather than a real service."""
    return str(getattr(settings, "AI_BASE_URL", "")).rstrip("/").endswith("/demo-llm/v1")


@job_type(
    "ai-generation",
    payload=AIGenerationPayload,
    max_attempts=4,
    timeout=300,
    rate_limit="20/m",
    # 429, 5xx, timeouts and dropped connections are retried; any other refusal is a PermanentError.
    retry_on=(llm.AIUnavailable,),
)
def ai_generation(ctx: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Ask an OpenAI-compatible model for a text in sections, streaming it and reporting each section received."""
    model = str(getattr(settings, "AI_MODEL", "demo-local"))
    wanted = payload["sections"]
    body = {
        "model": model,
        "temperature": payload["temperature"],
        "messages": [
            {
                "role": "system",
                "content": f"You write clear, friendly Markdown. Write exactly {wanted} sections, each starting "
                "with a heading line '## <title>'.",
            },
            {"role": "user", "content": payload["prompt"]},
        ],
    }
    ctx.progress(2, f"Asking {model} (attempt {ctx.attempt})", stage="connect", current=0, total=wanted)
    completion = llm.StreamedCompletion()
    received = 0
    for _delta in llm.chat_completion_stream(
        str(getattr(settings, "AI_BASE_URL", "")),
        str(getattr(settings, "AI_API_KEY", "")),
        body,
        timeout=float(getattr(settings, "AI_TIMEOUT", 30)),
        completion=completion,
    ):
        if ctx.is_canceled():
            return None
        titles = HEADING.findall(completion.text)
        # A section is complete once the next one's heading arrives (the last one: when the stream ends).
        if len(titles) - 1 > received:
            received = len(titles) - 1
            ctx.progress(
                5 + 90 * min(received, wanted) // wanted,
                f"Received section {received} of {wanted}: {titles[received - 1]}",
                stage="stream",
                current=received,
                total=wanted,
                characters=len(completion.text),
            )
    titles = HEADING.findall(completion.text + "\n")
    ctx.progress(98, f"Received {len(titles)} sections", stage="done", current=len(titles), total=wanted)
    local = ai_is_local()
    return {
        "model": completion.model or model,
        "localDemoModel": local,
        **({"note": "Written by the demo's local stand-in model: deterministic text, no real AI."} if local else {}),
        "sections": titles,
        "text": completion.text,
        "characters": len(completion.text),
        "words": len(completion.text.split()),
        "finishReason": completion.finish_reason,
        "usage": completion.usage,
    }
