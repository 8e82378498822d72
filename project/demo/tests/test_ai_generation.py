"""ai-generation against real HTTP servers: a scripted OpenAI-compatible server, and the demo's own local model."""

from __future__ import annotations

import json
import socket

import pytest

from jobs import submit
from jobs.exceptions import InvalidPayload
from jobs.models import JobLog

from .support import RecordingContext

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOAD = {"prompt": "Write about queues and workers", "sections": 3}


def submit_job(user, capture, payload=None) -> JobLog:
    with capture(execute=True):
        return submit("ai-generation", payload or PAYLOAD, user=user)


def retries(job: JobLog) -> list[str]:
    return [event.message for event in job.events.filter(kind="retry_scheduled").order_by("id")]


def test_ai_generation__streams_the_sections(user, fake_ai, run_until_done, django_capture_on_commit_callbacks):
    job = run_until_done(submit_job(user, django_capture_on_commit_callbacks))

    assert job.status == "succeeded", job.error_message
    assert job.attempts == 1
    assert job.result["sections"] == ["Alpha", "Beta", "Gamma"]
    assert job.result["text"].startswith("## Alpha\n\nText 0.")
    assert job.result["model"] == "fake-1" and job.result["finishReason"] == "stop"
    assert job.result["localDemoModel"] is False
    request = fake_ai.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer test-key"
    assert request["body"]["stream"] is True and request["body"]["model"] == "fake-1"
    assert "exactly 3 sections" in request["body"]["messages"][0]["content"]
    assert request["body"]["messages"][1] == {"role": "user", "content": PAYLOAD["prompt"]}


def test_ai_generation__reports_progress_per_section(user, fake_ai):
    from project.demo.job_types import AIGenerationPayload, ai_generation

    ctx = RecordingContext(owner_id=user.pk)
    payload = AIGenerationPayload(data=PAYLOAD)
    assert payload.is_valid()
    ai_generation(ctx, payload.validated_data)

    streamed = [(percent, message) for percent, message, stage in ctx.calls if stage == "stream"]
    assert streamed == [(35, "Received section 1 of 3: Alpha"), (65, "Received section 2 of 3: Beta")]
    assert ctx.calls[-1] == (98, "Received 3 sections", "done")


@pytest.mark.parametrize("status", [429, 500, 503])
def test_ai_generation__retries_busy_and_failing_servers(
    user, fake_ai, run_until_done, django_capture_on_commit_callbacks, status
):
    fake_ai.script = [status, status, "stream"]
    job = run_until_done(submit_job(user, django_capture_on_commit_callbacks))

    assert job.status == "succeeded"
    assert job.attempts == 3
    assert len(fake_ai.requests) == 3
    assert all(f"HTTP {status}: scripted {status}" in message for message in retries(job))


def test_ai_generation__gives_up_after_its_attempts(user, fake_ai, run_until_done, django_capture_on_commit_callbacks):
    fake_ai.script = [429]
    job = run_until_done(submit_job(user, django_capture_on_commit_callbacks))

    assert job.status == "failed"
    assert job.attempts == job.max_attempts == 4
    assert job.error_type == "AIUnavailable"


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_ai_generation__other_client_errors_fail_at_once(
    user, fake_ai, run_until_done, django_capture_on_commit_callbacks, status
):
    fake_ai.script = [status, "stream"]
    job = run_until_done(submit_job(user, django_capture_on_commit_callbacks))

    assert job.status == "failed"
    assert job.attempts == 1 and len(fake_ai.requests) == 1
    assert job.error_type == "PermanentError"
    assert job.error_message == f"The AI service answered HTTP {status}: scripted {status}"


@pytest.mark.parametrize("behaviour", ["slow", "stall", "cut"])
def test_ai_generation__timeouts_and_broken_streams_are_retried(
    user, fake_ai, run_until_done, django_capture_on_commit_callbacks, behaviour
):
    fake_ai.script = [behaviour, "stream"]
    job = run_until_done(submit_job(user, django_capture_on_commit_callbacks))

    assert job.status == "succeeded"
    assert job.attempts == 2
    assert job.result["sections"] == ["Alpha", "Beta", "Gamma"]
    assert retries(job)[0].startswith("The AI service")


def test_ai_generation__an_unreachable_service_is_retried(
    user, settings, run_until_done, django_capture_on_commit_callbacks
):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again at once: nothing listens there
    settings.AI_BASE_URL = f"http://127.0.0.1:{port}/v1"
    job = run_until_done(submit_job(user, django_capture_on_commit_callbacks))

    assert job.status == "failed" and job.attempts == 4
    assert job.error_type == "AIUnavailable" and "Could not reach the AI service" in job.error_message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompt": "hi"}, "prompt"),
        ({"sections": 0}, "sections"),
        ({"sections": 9}, "sections"),
        ({"temperature": 2.5}, "temperature"),
        ({"prompt": ""}, "prompt"),
    ],
)
def test_ai_generation__bad_input_names_the_field(user, change, field):
    with pytest.raises(InvalidPayload) as caught:
        submit("ai-generation", {**PAYLOAD, **change}, user=user)
    assert list(caught.value.errors) == [field]


# --- the demo's local model ---------------------------------------------------------------------------------------


def chat(client, body, key="demo-local-key"):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return client.post("/demo-llm/v1/chat/completions", json.dumps(body), content_type="application/json", **headers)


BODY = {
    "model": "demo-local",
    "stream": True,
    "messages": [
        {"role": "system", "content": "Write exactly 2 sections."},
        {"role": "user", "content": "Explain retries with backoff"},
    ],
}


def test_local_model__streams_deterministic_sections(client):
    first = chat(client, BODY)
    assert first.status_code == 200 and first["Content-Type"] == "text/event-stream"
    events = b"".join(first.streaming_content).decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert text.count("## ") == 2 and "retries" in text.lower()
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    again = chat(client, {**BODY, "stream": False}).json()
    assert again["choices"][0]["message"]["content"] == text


@pytest.mark.parametrize(
    ("body", "key", "status", "code"),
    [
        (BODY, "wrong", 401, "invalid_api_key"),
        (BODY, "", 401, "invalid_api_key"),
        ({**BODY, "model": "gpt-x"}, "demo-local-key", 404, "model_not_found"),
        ({**BODY, "messages": []}, "demo-local-key", 400, "invalid_messages"),
    ],
)
def test_local_model__refuses_like_openai(client, body, key, status, code):
    answer = chat(client, body, key)
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code


def test_local_model__serves_the_job_over_http(
    user, live_server, settings, run_until_done, django_capture_on_commit_callbacks
):
    settings.AI_BASE_URL = f"{live_server.url}/demo-llm/v1"
    settings.AI_API_KEY = settings.DEMO_LLM_API_KEY
    settings.AI_MODEL = "demo-local"
    prompt = "Explain idempotency keys [simulate 429]"
    job = run_until_done(submit_job(user, django_capture_on_commit_callbacks, {"prompt": prompt, "sections": 4}))

    assert job.status == "succeeded", job.error_message
    assert job.attempts == 3  # the local model refuses a [simulate 429] prompt twice
    assert job.result["localDemoModel"] is True and job.result["model"] == "demo-local"
    assert len(job.result["sections"]) == 4
