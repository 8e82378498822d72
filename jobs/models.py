"""JobLog, JobEvent and JobSchedule: the SQL history that is the source of truth (Redis is the transport)."""

from __future__ import annotations

import os
import uuid
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .access import may_see_all_jobs


class JobStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    QUEUED = "queued", _("queued")
    SCHEDULED = "scheduled", _("scheduled")
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    CANCELED = "canceled", _("canceled")


WAITING_STATUSES = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.SCHEDULED)
TERMINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


class PriorityChoices(models.TextChoices):
    CRITICAL = "critical", _("critical")
    HIGH = "high", _("high")
    NORMAL = "normal", _("normal")
    LOW = "low", _("low")


class JobLogQuerySet(models.QuerySet["JobLog"]):
    def update(self, **kwargs: Any) -> int:
        # Status changes go through update(), which skips auto_now: stamp updated_at here, once for all of them,
        # so "changed recently" (the reconciler's grace, the admin) stays true.
        kwargs.setdefault("updated_at", timezone.now())
        return super().update(**kwargs)

    def visible_to(self, user: Any) -> JobLogQuerySet:
        """Users with ``jobs.view_joblog`` (or change) see every job; everybody else, staff or not, only their own."""
        if may_see_all_jobs(user):
            return self
        if not getattr(user, "is_authenticated", False):
            return self.none()
        return self.filter(owner=user)


class JobLog(models.Model):
    # JobLog.id is also the rq job id: one id everywhere.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job_type = models.CharField(_("type"), max_length=100)
    queue = models.CharField(max_length=100)
    priority = models.CharField(max_length=10, choices=PriorityChoices.choices, default=PriorityChoices.NORMAL)
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.PENDING)
    payload = models.JSONField(default=dict)
    result = models.JSONField(null=True, blank=True)
    error_type = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    progress_percent = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=500, blank=True)
    progress_stage = models.CharField(max_length=100, blank=True)
    progress_data = models.JSONField(default=dict, blank=True)
    failed_items = models.JSONField(default=list, blank=True, help_text=_("Per-item failures: the first ones kept."))
    failed_items_count = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0, help_text=_("Attempts started, manual retries included."))
    max_attempts = models.PositiveIntegerField(default=3)
    # A manual retry grants a fresh budget while `attempts` keeps counting: the budget starts here.
    attempts_before_retry = models.PositiveIntegerField(default=0)
    # No index of its own: joblog_owner_created starts with it (every row written updates each index).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
        db_index=False,
    )
    # NULL, not "": only rows that carry a key take part in the idempotency constraints.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    schedule = models.ForeignKey("JobSchedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    worker_name = models.CharField(max_length=200, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    run_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects: ClassVar[JobLogQuerySet] = JobLogQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        ordering = ("-created_at",)
        indexes = [
            # Dashboard and API lists: "jobs with status X, newest first".
            models.Index(fields=["status", "-created_at"], name="joblog_status_created"),
            # Per-type counts and the type filter.
            models.Index(fields=["job_type", "status"], name="joblog_type_status"),
            # "My jobs", newest first.
            models.Index(fields=["owner", "-created_at"], name="joblog_owner_created"),
            # Queue page counts by status and priority level: an index-only scan, not a read of the whole table.
            models.Index(fields=["queue", "status", "priority"], name="joblog_queue_counts"),
            # Throughput per queue over the last minute and hour, and the dashboard's charts (index-only).
            models.Index(fields=["queue", "finished_at", "status"], name="joblog_queue_finished_status"),
            # Unfiltered list, newest first, and retention cleanup by age.
            models.Index(fields=["-created_at"], name="joblog_created"),
            # The admin's search by error text: only the few rows with an error, newest first.
            models.Index(fields=["-created_at"], condition=~Q(error_message=""), name="joblog_error_search"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(progress_percent__lte=100), name="joblog_progress_percent_range"),
            # Idempotency scope is owner + type; NULL owners need their own constraint (NULLs are distinct).
            models.UniqueConstraint(
                fields=["owner", "job_type", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False, owner__isnull=False),
                name="joblog_idempotency_per_owner",
            ),
            models.UniqueConstraint(
                fields=["job_type", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False, owner__isnull=True),
                name="joblog_idempotency_ownerless",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_type} {self.short_id} ({self.status})"

    @property
    def short_id(self) -> str:
        return str(self.id)[:8]

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


class EventKind(models.TextChoices):
    SUBMITTED = "submitted", _("submitted")
    STARTED = "started", _("started")
    DEFERRED = "deferred", _("deferred by a limit")
    RETRY_SCHEDULED = "retry_scheduled", _("retry scheduled")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    CANCEL_REQUESTED = "cancel_requested", _("cancel requested")
    CANCELED = "canceled", _("canceled")
    RETRIED = "retried", _("retried by hand")
    INTERRUPTED = "interrupted", _("returned to its queue unfinished")


class JobEvent(models.Model):
    """Append-only timeline of a job."""

    # No index of its own: jobevent_timeline starts with it.
    job = models.ForeignKey(JobLog, on_delete=models.CASCADE, related_name="events", db_index=False)
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    status = models.CharField(max_length=10, choices=JobStatus.choices, blank=True)
    attempt = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("job event")
        verbose_name_plural = _("job events")
        ordering = ("created_at", "id")
        indexes = [models.Index(fields=["job", "created_at"], name="jobevent_timeline")]

    def __str__(self) -> str:
        return f"{self.kind} #{self.attempt}"


class ScheduleKind(models.TextChoices):
    CRON = "cron", _("cron")
    INTERVAL = "interval", _("interval")
    ONCE = "once", _("once")


class OverlapPolicy(models.TextChoices):
    SKIP = "skip", _("skip while the previous run is active")
    ALLOW = "allow", _("allow overlapping runs")


class JobSchedule(models.Model):
    name = models.CharField(max_length=200, unique=True)
    job_type = models.CharField(_("type"), max_length=100)
    payload = models.JSONField(default=dict, blank=True)
    kind = models.CharField(max_length=10, choices=ScheduleKind.choices, default=ScheduleKind.CRON)
    cron = models.CharField(max_length=200, blank=True, help_text=_('Five cron fields, e.g. "*/5 * * * *".'))
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    run_at = models.DateTimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    enabled = models.BooleanField(default=True)
    priority = models.CharField(max_length=10, choices=PriorityChoices.choices, default=PriorityChoices.NORMAL)
    overlap = models.CharField(max_length=5, choices=OverlapPolicy.choices, default=OverlapPolicy.SKIP)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_job = models.ForeignKey(JobLog, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="job_schedules"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("schedule")
        verbose_name_plural = _("schedules")
        ordering = ("name",)
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="jobschedule_due")]
        constraints = [
            models.CheckConstraint(
                condition=Q(interval_seconds__isnull=True) | Q(interval_seconds__gte=1),
                name="jobschedule_interval_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Queue(JobLog):
    """The admin's queues page. A proxy, so that the admin index lists it beside jobs and schedules.

    It has no table and no permissions of its own: the admin lets whoever may view jobs see it.
    """

    class Meta:
        proxy = True
        verbose_name = _("queue")
        verbose_name_plural = _("queues")
        default_permissions = ()


class PausedQueue(models.Model):
    """A paused job queue. SQL keeps the pause so that it outlives Redis (wiped, restarted without its data); Redis
    keeps a copy that workers read when they claim, which the reconciler restores from here."""

    name = models.CharField(max_length=100, unique=True)
    paused_at = models.DateTimeField(default=timezone.now)
    paused_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = _("paused queue")
        verbose_name_plural = _("paused queues")
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


def upload_to(instance: Upload, filename: str) -> str:
    """A random name under ``uploads/``: the client's file name is kept in ``Upload.name``, never used as a path."""
    return f"uploads/{uuid.uuid4().hex}{os.path.splitext(filename)[1].lower()}"


class Upload(models.Model):
    """A file sent to ``POST /api/uploads/`` for jobs to read: a payload names it by id (see jobs.uploads)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    file = models.FileField(upload_to=upload_to, max_length=255)  # in default_storage
    name = models.CharField(max_length=255, help_text=_("The file's name as the client sent it."))
    size = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=100, help_text=_("As the client declared it."))
    # CASCADE: a user's files go with the user (the post_delete receiver deletes them from storage).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="job_uploads"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("upload")
        verbose_name_plural = _("uploads")
        ordering = ("-created_at",)
        # Retention's cleanup: the uploads older than a cutoff, oldest first.
        indexes = [models.Index(fields=["created_at"], name="upload_retention")]

    def __str__(self) -> str:
        return self.name


class FinishedJobCount(models.Model):
    """Jobs that succeeded or failed per bucket, queue and type: the dashboard's charts read these instead of counting
    JobLog, so their cost does not grow with history (jobs.rollup fills them; retention leaves them alone).

    A bucket is one minute (``minutes=1``) for the last hours, one hour (``minutes=60``) before that: the charts need
    minutes only for the last hour, and a week of hourly rows stays small.
    """

    bucket = models.DateTimeField()  # UTC start of the minute or hour
    minutes = models.PositiveSmallIntegerField(default=1)  # the bucket's width: 1 or 60
    queue = models.CharField(max_length=100)
    job_type = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=JobStatus.choices)  # succeeded or failed
    count = models.PositiveIntegerField()

    class Meta:
        verbose_name = _("finished job count")
        verbose_name_plural = _("finished job counts")
        constraints = [
            # The upsert's conflict target; its index (bucket first) also serves the charts' range reads.
            models.UniqueConstraint(fields=["bucket", "queue", "job_type", "status"], name="finishedjobcount_key"),
        ]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:%M} {self.queue} {self.job_type} {self.status}: {self.count}"


class RollupMark(models.Model):
    """How far jobs.rollup has counted: jobs that finished before ``until`` are in FinishedJobCount, later ones are
    counted live from JobLog. Kept apart from the counts: a stretch of minutes without jobs writes no count row, and
    the next run must still start after it."""

    name = models.CharField(max_length=50, unique=True)  # "finished": one row per rollup
    until = models.DateTimeField()

    class Meta:
        verbose_name = _("rollup mark")
        verbose_name_plural = _("rollup marks")

    def __str__(self) -> str:
        return f"{self.name}: until {self.until:%Y-%m-%d %H:%M}"
