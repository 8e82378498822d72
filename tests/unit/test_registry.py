"""Job types: options, defaults, payload validation, backoff maths, and the system checks that guard them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from rest_framework import serializers

from jobs import PermanentError, registry
from jobs.checks import check_job_types, check_settings
from jobs.exceptions import InvalidPayload, UnknownJobType
from jobs.registry import JobType, RateLimit, job_type
from jobs.transport.queues import queue_names


@pytest.fixture
def throwaway() -> Any:
    names: list[str] = []

    def register(name: str, **options: Any) -> JobType:
        names.append(name)
        job_type(name, **options)(lambda ctx, payload: None)
        return registry.get(name)

    yield register
    for name in names:
        registry.unregister(name)


class SecretPayload(serializers.Serializer[Any]):
    user = serializers.CharField()
    password = serializers.CharField()


def check_ids(messages: list[Any]) -> set[str]:
    return {m.id for m in messages}


def test_job_type__defaults_from_settings(throwaway, settings):
    settings.JOBS = {"DEFAULT_MAX_ATTEMPTS": 7, "DEFAULT_TIMEOUT": 42, "DEFAULT_RETENTION_DAYS": 2}
    jt = throwaway("plain")
    assert (jt.queue, jt.max_attempts, jt.timeout, jt.retention) == ("plain", 7, 42, timedelta(days=2))
    assert (jt.rate_limit, jt.concurrency, jt.staff_only, jt.payload) == (None, None, False, None)


def test_job_type__design_defaults(throwaway, settings):
    settings.JOBS = {}
    jt = throwaway("stock")
    assert (jt.max_attempts, jt.backoff, jt.timeout, jt.retention) == (3, (5, 300), 300, timedelta(days=30))


def test_job_type__options_kept(throwaway):
    class Payload(serializers.Serializer[Any]):
        n = serializers.IntegerField()

    jt = throwaway(
        "custom",
        queue="shared",
        payload=Payload,
        max_attempts=5,
        backoff=(1, 10),
        timeout=9,
        rate_limit="10/m",
        concurrency=2,
        per_user_concurrency=1,
        retention=3600,
        staff_only=True,
        retry_on=(IOError,),
        give_up_on=(KeyError,),
    )
    assert jt.queue == "shared" and jt.parsed_rate_limit == RateLimit(10, 60)
    assert jt.retention == timedelta(hours=1) and jt.staff_only and jt.concurrency == 2
    assert jt.per_user_concurrency == 1
    assert check_job_types(None) == []


def test_get__unknown_type_is_refused():
    with pytest.raises(UnknownJobType, match="no job type named 'nope'"):
        registry.get("nope")


def test_autodiscovery__job_types_modules_registered():
    assert {"echo", "greet", "flaky"} <= {t.name for t in registry.all_types()}


def test_validate__serializer_errors_by_field():
    greet = registry.get("greet")
    assert greet.validate({"name": "Ada"}) == {"name": "Ada", "times": 1}
    with pytest.raises(InvalidPayload) as err:
        greet.validate({"times": "many"})
    assert set(err.value.errors) == {"name", "times"}


def test_validate__untyped_payload_must_be_an_object():
    assert registry.get("echo").validate({"x": [1, 2]}) == {"x": [1, 2]}
    with pytest.raises(InvalidPayload):
        registry.get("echo").validate([1, 2])


@pytest.mark.parametrize(("text", "expected"), [("1/s", (1, 1)), ("10/m", (10, 60)), ("250/h", (250, 3600))])
def test_rate_limit__parse(text, expected):
    assert RateLimit.parse(text) == RateLimit(*expected)


@pytest.mark.parametrize("text", ["", "10", "0/s", "-1/m", "10/d", "10 / m", "ten/m", "1.5/s"])
def test_rate_limit__bad_text_refused(text):
    with pytest.raises(ValueError, match="rate limit must look like"):
        RateLimit.parse(text)


def test_backoff__exponential_with_equal_jitter_and_cap(throwaway):
    jt = throwaway("backing-off", backoff=(5, 300))
    for attempt, ceiling in [(1, 5), (2, 10), (3, 20), (6, 160), (7, 300), (20, 300)]:
        waits = [jt.backoff_delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > ceiling / 10  # jittered, not fixed


def test_should_retry__per_error_policy(throwaway):
    jt = throwaway("policy", retry_on=(OSError,), give_up_on=(FileNotFoundError,))
    assert jt.should_retry(ConnectionError()) is True
    assert jt.should_retry(FileNotFoundError()) is False  # give_up_on wins over retry_on
    assert jt.should_retry(ValueError()) is False  # not listed in retry_on
    assert jt.should_retry(PermanentError()) is False


@pytest.mark.parametrize(
    ("options", "check_id"),
    [
        ({"rate_limit": "fast"}, "jobs.E017"),
        ({"concurrency": 0}, "jobs.E018"),
        ({"per_user_concurrency": 0}, "jobs.E023"),
        ({"per_user_concurrency": "2"}, "jobs.E023"),
        ({"per_user_concurrency": True}, "jobs.E023"),
        ({"max_attempts": 0}, "jobs.E015"),
        ({"timeout": 0}, "jobs.E016"),
        ({"backoff": (10, 1)}, "jobs.E014"),
        ({"payload": dict}, "jobs.E013"),
        ({"queue": "Bad Queue"}, "jobs.E012"),
        ({"retention": "forever"}, "jobs.E019"),
        ({"retry_on": ("OSError",)}, "jobs.E020"),
        ({"sensitive": ("",)}, "jobs.E024"),
        ({"sensitive": ("password", 3)}, "jobs.E024"),
        ({"sensitive": ("passwd",), "payload": SecretPayload}, "jobs.E024"),
    ],
)
def test_checks__misconfigured_type_reported(options, check_id, throwaway):
    throwaway("broken", **options)
    messages = check_job_types(None)
    assert check_ids(messages) == {check_id}
    assert "'broken'" in messages[0].msg


def test_checks__bad_name_reported(throwaway):
    throwaway("Bad Name", queue="fine")
    assert check_ids(check_job_types(None)) == {"jobs.E011"}


def test_checks__duplicate_name_reported(throwaway):
    throwaway("twice")

    def other(ctx: Any, payload: Any) -> None: ...

    job_type("twice")(other)
    try:
        assert check_ids(check_job_types(None)) == {"jobs.E010"}
    finally:
        registry._duplicates.clear()


def test_checks__fail_manage_py_check(throwaway):
    throwaway("broken-rate", rate_limit="10 per minute")
    with pytest.raises(SystemCheckError, match="jobs.E017"):
        call_command("check", "--tag", "jobs")  # only ours: Django 6 model checks would need a database


@pytest.mark.parametrize(
    ("jobs", "check_id"),
    [
        ({"NOT_A_SETTING": 1}, "jobs.E001"),
        ({"REDIS_URL": "localhost:6379"}, "jobs.E002"),
        ({"DEFAULT_MAX_ATTEMPTS": 0}, "jobs.E003"),
        ({"CANCEL_GRACE": -1}, "jobs.E004"),
        ({"PROGRESS_PUBLISH_INTERVAL": "often"}, "jobs.E004"),
        ({"DASHBOARD_INTERVAL": -2}, "jobs.E004"),
        ({"DEFAULT_BACKOFF": (5,)}, "jobs.E014"),
        ({"REDIS_SOCKET_TIMEOUT": 0}, "jobs.E006"),
        ({"REDIS_SOCKET_TIMEOUT": None}, "jobs.E006"),
        ({"REDIS_CONNECT_TIMEOUT": "5s"}, "jobs.E006"),
        ({"MAX_SOCKETS_PER_USER": 0}, "jobs.E003"),
        ({"MAX_SOCKETS_PER_USER": "20"}, "jobs.E003"),
        ({"SOCKET_RECHECK_INTERVAL": 0}, "jobs.E007"),
        ({"SOCKET_RECHECK_INTERVAL": 61}, "jobs.E007"),
        ({"SOCKET_RECHECK_INTERVAL": True}, "jobs.E007"),
        ({"MAX_UPLOAD_BYTES": 0}, "jobs.E003"),
        ({"UPLOAD_EXTENSIONS": ".csv"}, "jobs.E008"),
        ({"UPLOAD_CONTENT_TYPES": ("Text/CSV",)}, "jobs.E008"),
    ],
)
def test_checks__bad_settings_reported(jobs, check_id, settings):
    settings.JOBS = jobs
    assert check_ids(check_settings(None)) == {check_id}


def test_checks__good_settings_pass(settings):
    settings.JOBS = {
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "DEFAULT_BACKOFF": [1, 60],
        "CANCEL_GRACE": 0,
        "REDIS_SOCKET_TIMEOUT": 0.5,
        "REDIS_CONNECT_TIMEOUT": 2,
        "SOCKET_RECHECK_INTERVAL": 60,
        "MAX_SOCKETS_PER_USER": 1,
    }
    assert check_settings(None) == []


def test_checks__missing_channel_layers_warns_that_live_progress_is_off(settings):
    del settings.CHANNEL_LAYERS
    messages = check_settings(None)
    assert check_ids(messages) == {"jobs.W001"}
    assert "live progress over websockets is off" in messages[0].msg and "JobsChannelLayer" in messages[0].hint


def test_queue_names__strict_priority_order(settings):
    settings.JOBS = {"QUEUE_PREFIX": "jobs"}
    assert queue_names(["b", "a"]) == [
        "jobs:a:critical",
        "jobs:b:critical",
        "jobs:a:high",
        "jobs:b:high",
        "jobs:a:normal",
        "jobs:b:normal",
        "jobs:a:low",
        "jobs:b:low",
    ]


def test_sensitive__names_payload_keys(throwaway):
    assert throwaway("secretive", payload=SecretPayload, sensitive=("password",)).sensitive == ("password",)
    assert throwaway("one-key", sensitive="token").sensitive == ("token",), "a lone string is one key"
    assert throwaway("open").sensitive == ()
    assert registry.sensitive_keys("secretive") == ("password",)
    assert registry.sensitive_keys("no-such-type") == ()
    assert check_job_types(None) == []
