"""The API's JSON shapes (DESIGN.md "HTTP API"): jobs, events, job types, queues, schedules, health."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .. import registry, scheduler
from ..exceptions import InvalidPayload, InvalidSchedule, UnknownJobType
from ..job_json import job_json, sees_traceback
from ..models import JobEvent, JobLog, JobSchedule, JobStatus, ScheduleKind
from ..registry import JobType
from ..services import unstorable_json
from ..types import PRIORITIES
from .payload_schema import payload_schema

# The latest moment the engine can still do arithmetic on (rq rounds run_at up to the next second).
LATEST_RUN_AT = datetime(9999, 1, 1, tzinfo=UTC)


def viewer(context: Mapping[str, Any]) -> Any:
    # Views pass the request; callers without one pass the user.
    request = context.get("request")
    return request.user if request is not None else context.get("user")


def shows_traceback(context: Mapping[str, Any]) -> bool:
    return sees_traceback(viewer(context))


class ErrorSerializer(serializers.Serializer[Any]):
    """An error: what went wrong, and a stable code."""

    detail = serializers.CharField()
    code = serializers.CharField()


# ---------------------------------------------------------------------------------------------------------------
# Jobs


class ProgressSerializer(serializers.Serializer[JobLog]):
    percent = serializers.IntegerField(source="progress_percent", min_value=0, max_value=100)
    message = serializers.CharField(source="progress_message")
    stage = serializers.CharField(source="progress_stage")
    # DRF's metaclass pops declared fields off the class: this field does not shadow Serializer.data.
    data = serializers.DictField(source="progress_data")  # type: ignore[assignment]


class JobErrorSerializer(serializers.Serializer[Any]):
    """Documents the shape of a job's ``error``; the JobSerializer builds it."""

    type = serializers.CharField()
    message = serializers.CharField()
    traceback = serializers.CharField(required=False, help_text="Only for users with jobs.view_joblog.")


class FailedItemSerializer(serializers.Serializer[Any]):
    item = serializers.CharField()
    error = serializers.CharField()


@extend_schema_field(FailedItemSerializer(many=True))
class FailedItemsField(serializers.JSONField):
    """The stored list as it is: the runner always writes ``{item, error}`` pairs."""


@extend_schema_field(JobErrorSerializer(allow_null=True))
class JobErrorField(serializers.ReadOnlyField):
    """A job's ``error`` or null."""


class JobSerializer(serializers.ModelSerializer[JobLog]):
    """A job as every client sees it; ``error.traceback`` only for users with ``jobs.view_joblog``."""

    # The declared fields document the shape (drf-spectacular reads them); jobs.job_json builds the answer, so the
    # API, the websockets and the admin cannot drift apart. The docstrings above are the schema's descriptions.

    type = serializers.CharField(source="job_type", read_only=True)
    payload = serializers.DictField(
        read_only=True,
        help_text='What was submitted. Keys the job type marks as sensitive read "***" without jobs.view_joblog.',
    )
    progress = ProgressSerializer(source="*", read_only=True)
    error = JobErrorField(read_only=True)
    failed_items = FailedItemsField(read_only=True)
    status_url = serializers.URLField(read_only=True)
    ws_url = serializers.URLField(read_only=True)

    class Meta:
        model = JobLog
        fields = [
            "id",
            "type",
            "queue",
            "priority",
            "status",
            "payload",
            "progress",
            "result",
            "error",
            "attempts",
            "max_attempts",
            "failed_items",
            "failed_items_count",
            "created_at",
            "enqueued_at",
            "run_at",
            "started_at",
            "finished_at",
            "owner",
            "schedule",
            "status_url",
            "ws_url",
        ]
        read_only_fields = fields

    def to_representation(self, instance: JobLog) -> Any:
        return job_json(
            instance,
            viewer(self.context),
            sensitive=registry.sensitive_keys(instance.job_type),
            request=self.context.get("request"),
        )


class StrictCharField(serializers.CharField):
    """A JSON string and nothing else (DRF's CharField would turn 5 into "5")."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictNumberField(serializers.FloatField):
    """A JSON number and nothing else (DRF's FloatField would take "5" and true)."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


# What a CharField takes after trimming spaces: some visible character, no NUL (ECMA-262, for the document).
VISIBLE_TEXT_PATTERN = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": 100, "pattern": VISIBLE_TEXT_PATTERN})
class TypeNameField(StrictCharField):
    """A job type's name; whether it is registered is submit()'s question (a 400 naming it)."""


@extend_schema_field({"type": "string", "maxLength": 100, "pattern": r"^[^\u0000]*$"})
class FilterTextField(serializers.CharField):
    """A filter value as given: blank or unknown values match nothing; only NUL is refused."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=100, allow_blank=True, trim_whitespace=False, **kwargs)


@extend_schema_field({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "maxLength": 0}]})
class DateFilterField(serializers.DateTimeField):
    """A date-time filter; DRF takes an empty query value as no filter at all."""


class JobCreateSerializer(serializers.Serializer[Any]):
    """The body of POST jobs/. Checks JSON types here; submit() checks everything else."""

    type = TypeNameField(max_length=100)
    payload = serializers.DictField(required=False, help_text="Validated by the job type's payload serializer.")
    priority = serializers.ChoiceField(choices=PRIORITIES, default="normal")
    delay = StrictNumberField(
        required=False, allow_null=True, min_value=0, help_text="Seconds to wait before running; not with run_at."
    )
    run_at = serializers.DateTimeField(required=False, allow_null=True, help_text="ISO 8601; not with delay.")

    def validate_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        if problem := unstorable_json(payload):
            raise serializers.ValidationError(problem)
        return payload

    def validate_delay(self, delay: float | None) -> float | None:
        if delay is not None and (delay > (LATEST_RUN_AT - timezone.now()).total_seconds()):
            raise serializers.ValidationError("This delay is too far in the future.")
        return delay

    def validate_run_at(self, run_at: datetime | None) -> datetime | None:
        if run_at is not None and run_at >= LATEST_RUN_AT:
            raise serializers.ValidationError("This time is too far in the future.")
        return run_at


class JobEventSerializer(serializers.ModelSerializer[JobEvent]):
    # DRF's metaclass pops declared fields off the class: this field does not shadow Serializer.data.
    data = serializers.SerializerMethodField()  # type: ignore[assignment]

    class Meta:
        model = JobEvent
        fields = ["id", "kind", "status", "attempt", "message", "data", "created_at"]

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_data(self, event: JobEvent) -> Any:
        # Failure events record the traceback, shown only to those who see the job's own (jobs.view_joblog).
        if shows_traceback(self.context) or not isinstance(event.data, dict):
            return event.data
        return {k: v for k, v in event.data.items() if k != "traceback"}


class JobListFilterSerializer(serializers.Serializer[Any]):
    """Query parameters of GET jobs/: repeat ``status`` or ``type`` to match any of several values."""

    status = serializers.ListField(child=serializers.ChoiceField(choices=JobStatus.choices), required=False)
    type = serializers.ListField(child=FilterTextField(), required=False)
    created_after = DateFilterField(required=False, help_text="Inclusive; empty: no limit.")
    created_before = DateFilterField(required=False, help_text="Exclusive; empty: no limit.")


# ---------------------------------------------------------------------------------------------------------------
# Job types, queues, health


class JobTypeSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    queue = serializers.CharField()
    staff_only = serializers.BooleanField()
    max_attempts = serializers.IntegerField()
    timeout = serializers.IntegerField(help_text="Seconds.")
    rate_limit = serializers.CharField(allow_null=True, help_text='At most N starts per period: "N/s", "N/m", "N/h".')
    concurrency = serializers.IntegerField(allow_null=True)
    payload_schema = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_payload_schema(self, job_type: JobType) -> dict[str, Any]:
        return payload_schema(job_type.payload)


class QueueCountsSerializer(serializers.Serializer[Any]):
    pending = serializers.IntegerField()
    queued = serializers.IntegerField()
    scheduled = serializers.IntegerField()
    running = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    canceled = serializers.IntegerField()


class QueueWorkerSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    host = serializers.CharField()
    pid = serializers.IntegerField()
    state = serializers.CharField()
    current_job = serializers.CharField(allow_null=True)
    last_heartbeat = serializers.DateTimeField(allow_null=True)


class ThroughputSerializer(serializers.Serializer[Any]):
    last_minute = serializers.IntegerField()
    last_hour = serializers.IntegerField()


class QueueStatsSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    job_types = serializers.ListField(child=serializers.CharField())
    paused = serializers.BooleanField()
    counts = QueueCountsSerializer()
    waiting_in_redis = serializers.DictField(
        child=serializers.IntegerField(), help_text="Jobs waiting in Redis per priority level."
    )
    workers = QueueWorkerSerializer(many=True)
    throughput = ThroughputSerializer()


class QueueActionSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    paused = serializers.BooleanField(required=False)
    requeued = serializers.IntegerField(required=False, help_text="requeue-failed/: how many failed jobs went back.")


class HealthSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=["ok", "degraded"])
    database = serializers.BooleanField(
        required=False, help_text="Only for users with jobs.view_joblog, like every detail below."
    )
    redis = serializers.BooleanField(required=False)
    workers = serializers.IntegerField(required=False)
    queue_depth = serializers.IntegerField(required=False)
    oldest_waiting_seconds = serializers.FloatField(required=False, allow_null=True)


# ---------------------------------------------------------------------------------------------------------------
# Schedules


class ScheduleSerializer(serializers.ModelSerializer[JobSchedule]):
    """A JobSchedule; ``type`` and ``payload`` are checked against the registry like a submission."""

    type = serializers.CharField(source="job_type", max_length=100)
    payload = serializers.DictField(required=False)
    interval_seconds = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=scheduler.MAX_INTERVAL_SECONDS
    )

    class Meta:
        model = JobSchedule
        fields = [
            "id",
            "name",
            "type",
            "payload",
            "kind",
            "cron",
            "interval_seconds",
            "run_at",
            "timezone",
            "enabled",
            "priority",
            "overlap",
            "next_run_at",
            "last_run_at",
            "last_job",
        ]
        read_only_fields = ["next_run_at", "last_run_at", "last_job"]

    def validate_type(self, name: str) -> str:
        try:
            registry.get(name)
        except UnknownJobType as exc:
            raise serializers.ValidationError(str(exc)) from None
        return name

    def _check_owner_may_submit(self, type_name: str) -> None:
        # Whoever saves the schedule becomes its owner and its runs are submitted as them: a staff-only type needs a
        # staff editor, checked now rather than refused at every tick. Without a user (code), submit() decides.
        editor = viewer(self.context)
        if editor is not None and registry.get(type_name).staff_only and not getattr(editor, "is_staff", False):
            raise serializers.ValidationError(
                {"type": f"Only staff may schedule {type_name!r} jobs: its runs are submitted as you."}
            )

    def validate_timezone(self, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise serializers.ValidationError(f"{name!r} is not a time zone name such as 'Europe/Paris'.") from None
        return name

    def validate_cron(self, expression: str) -> str:
        expression = " ".join(expression.split())
        if expression and (len(expression.split()) != 5 or not croniter.is_valid(expression)):
            raise serializers.ValidationError(
                f"{expression!r} is not a cron expression of five fields, such as '*/5 * * * *'."
            )
        return expression

    def validate_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        if problem := unstorable_json(payload):
            raise serializers.ValidationError(problem)
        return payload

    def validate_run_at(self, run_at: datetime | None) -> datetime | None:
        if run_at is not None and not scheduler.EARLIEST_RUN_AT <= run_at < scheduler.LATEST_RUN_AT:
            raise serializers.ValidationError("Give a time between 1970-01-02 and 9999-01-01 (UTC).")
        return run_at

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        merged = {**self._current(), **attrs}
        kind = merged["kind"]
        errors: dict[str, str] = {}
        if kind == ScheduleKind.CRON and not merged.get("cron"):
            errors["cron"] = "A cron schedule needs a cron expression."
        if kind == ScheduleKind.INTERVAL and not merged.get("interval_seconds"):
            errors["interval_seconds"] = "An interval schedule needs interval_seconds (1 or more)."
        if kind == ScheduleKind.ONCE and not merged.get("run_at"):
            errors["run_at"] = "A one-off schedule needs run_at."
        if errors:
            raise serializers.ValidationError(errors)
        self._check_owner_may_submit(merged["job_type"])
        try:
            attrs["payload"] = registry.get(merged["job_type"]).validate(merged.get("payload") or {})
        except InvalidPayload as exc:
            raise serializers.ValidationError({"payload": exc.errors}) from None
        # Fields of the other kinds are cleared, so that what is stored says what will happen.
        attrs["cron"] = merged.get("cron", "") if kind == ScheduleKind.CRON else ""
        attrs["interval_seconds"] = merged.get("interval_seconds") if kind == ScheduleKind.INTERVAL else None
        attrs["run_at"] = merged.get("run_at") if kind == ScheduleKind.ONCE else None
        tz = merged.get("timezone") or "UTC"
        # The scheduler's own rules have the last word (a cron that never fires, ...). The time zone was checked
        # above, so what is left to blame is the field of the schedule's kind.
        try:
            scheduler.validate_timing(kind, attrs["cron"], attrs["interval_seconds"], attrs["run_at"], tz)
        except InvalidSchedule as exc:
            raise serializers.ValidationError({KIND_FIELD[kind]: str(exc)}) from None
        if not merged.get("enabled", True):
            attrs["next_run_at"] = None
        elif self.instance is None or self.instance.next_run_at is None or self._timing_changed(merged):
            # An edit that leaves the timing alone keeps the next run: renaming must not postpone it.
            upcoming = JobSchedule(
                kind=kind,
                cron=attrs["cron"],
                interval_seconds=attrs["interval_seconds"],
                run_at=attrs["run_at"],
                timezone=tz,
                last_run_at=getattr(self.instance, "last_run_at", None),
            )
            try:
                attrs["next_run_at"] = scheduler.initial_next_run(upcoming)
            except (ValueError, KeyError):  # croniter's "no such date": valid syntax that never fires
                raise serializers.ValidationError({"cron": "This cron expression never fires."}) from None
            except OverflowError:  # the next run would be past what a date can hold
                raise serializers.ValidationError({KIND_FIELD[kind]: "The next run is out of range."}) from None
        return attrs

    def _current(self) -> dict[str, Any]:
        if self.instance is None:
            return {"kind": ScheduleKind.CRON}
        return {name: getattr(self.instance, name) for name in ("job_type", "payload", *TIMING_FIELDS)}

    def _timing_changed(self, merged: dict[str, Any]) -> bool:
        return any(merged.get(name) != getattr(self.instance, name) for name in TIMING_FIELDS)


TIMING_FIELDS = ("kind", "cron", "interval_seconds", "run_at", "timezone", "enabled")
KIND_FIELD = {ScheduleKind.CRON: "cron", ScheduleKind.INTERVAL: "interval_seconds", ScheduleKind.ONCE: "run_at"}


# ---------------------------------------------------------------------------------------------------------------
# Schedules in the OpenAPI document: one shape per kind, each with the fields its kind needs. Documentation only:
# ScheduleSerializer validates every body.

# Five fields of cron characters (numbers, names, * , - / ? L W #); croniter judges the values.
CRON_PATTERN = r"^\s*[0-9A-Za-z*?/,#-]+(\s+[0-9A-Za-z*?/,#-]+){4}\s*$"


def _kind_field(kind: str) -> type[serializers.CharField]:
    @extend_schema_field({"type": "string", "enum": [kind]})
    class KindField(serializers.CharField):
        pass

    return KindField


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": 200, "pattern": CRON_PATTERN})
class CronField(serializers.CharField):
    pass


class CronScheduleSerializer(ScheduleSerializer):
    """A schedule that submits at the times of a cron expression (``kind`` may be left out: cron is the default)."""

    kind = _kind_field(ScheduleKind.CRON)(required=False)
    cron = CronField()


class IntervalScheduleSerializer(ScheduleSerializer):
    """A schedule that submits every ``interval_seconds``."""

    kind = _kind_field(ScheduleKind.INTERVAL)()
    interval_seconds = serializers.IntegerField(min_value=1, max_value=scheduler.MAX_INTERVAL_SECONDS)


class OnceScheduleSerializer(ScheduleSerializer):
    """A schedule that submits once, at ``run_at``."""

    kind = _kind_field(ScheduleKind.ONCE)()
    run_at = serializers.DateTimeField()
