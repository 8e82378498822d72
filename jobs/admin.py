"""The admin: jobs (read-only, with retry, cancel and delete), schedules (editable) and the queues dashboard."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_permission_codename, get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.formats import number_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import registry, scheduler, services
from .dashboard import QueueActionView, QueuesDataView, QueuesView
from .exceptions import InvalidSchedule, JobsError
from .job_json import job_json
from .models import (
    TERMINAL_STATUSES,
    JobEvent,
    JobLog,
    JobSchedule,
    JobStatus,
    Queue,
    ScheduleKind,
)

if TYPE_CHECKING:
    JobLogAdminBase = admin.ModelAdmin[JobLog]
    JobScheduleAdminBase = admin.ModelAdmin[JobSchedule]
    QueueAdminBase = admin.ModelAdmin[Queue]
    JobScheduleFormBase = forms.ModelForm[JobSchedule]
else:  # Django's classes are not generic at runtime
    JobLogAdminBase = JobScheduleAdminBase = QueueAdminBase = admin.ModelAdmin
    JobScheduleFormBase = forms.ModelForm

CSS = {"all": ["jobs/admin/jobs.css"]}


def can_operate_jobs(user: Any) -> bool:
    """Retry, cancel, pause, resume, requeue and empty: the admin never edits a job's fields, so the model's
    "change" permission is the right to steer jobs and queues."""
    return bool(user.has_perm(f"{JobLog._meta.app_label}.{get_permission_codename('change', JobLog._meta)}"))


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def pretty_json(value: Any, limit: int = 200_000) -> SafeString:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    note = ""
    if len(text) > limit:
        note = f"\n… {number_format(len(text) - limit, force_grouping=True)} more characters not shown"
        text = text[:limit]
    return format_html('<pre class="jobs-pre jobs-json">{}{}</pre>', text, note)


STATUS_LABELS = dict(JobStatus.choices)


def status_badge(status: str, job_id: Any = None) -> SafeString:
    label = STATUS_LABELS.get(status, status)
    return format_html(
        '<span class="jobs-badge jobs-badge--{}" data-job-status="{}">{}</span>', status, job_id or "", label
    )


def progress_bar(job: JobLog) -> SafeString:
    percent = 100 if job.status == JobStatus.SUCCEEDED else job.progress_percent
    return format_html(
        '<div class="jobs-progress jobs-progress--{}" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
        'aria-valuenow="{}" title="{}" data-job-progress="{}"><div class="jobs-progress__bar" style="width: {}%">'
        '</div><span class="jobs-progress__label">{}%</span></div>',
        job.status,
        percent,
        job.progress_message,
        job.pk,
        percent,
        percent,
    )


def compact_time(moment: datetime | None) -> SafeString | str:
    """A moment short enough for a list beside the admin's sidebars (today: the time alone); the title has it all."""
    if moment is None:
        return "—"
    local = timezone.localtime(moment)
    full = f"{local:%Y-%m-%d %H:%M:%S}"
    short = full[11:] if local.date() == timezone.localdate() else f"{local:%b %d, %H:%M}"
    return format_html('<time datetime="{}" title="{}">{}</time>', local.isoformat(), full, short)


def id_range(term: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The ids starting with ``term`` (a whole id, or its first hex digits) as an indexed range; else None."""
    digits = term.replace("-", "").lower()
    if not re.fullmatch(r"[0-9a-f]{6,32}", digits) or not re.fullmatch(r"[0-9a-fA-F-]+", term):
        return None
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


class EstimatedCountPaginator(Paginator):  # type: ignore[type-arg]
    """Counts up to ``exact_limit`` rows; above that, PostgreSQL's planner estimate: no full COUNT(*) per page."""

    exact_limit = 10_000
    is_estimate = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        capped = queryset.order_by()[: self.exact_limit + 1].count()
        if capped <= self.exact_limit:
            return capped
        estimate = self._planner_estimate(queryset)
        if estimate is None:
            return queryset.count()
        self.is_estimate = True
        return max(estimate, capped)

    @staticmethod
    def _planner_estimate(queryset: QuerySet[Any]) -> int | None:
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return None
        sql, params = queryset.order_by().query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])

    @property
    def count_display(self) -> str:
        count = number_format(self.count, force_grouping=True)
        return str(_("about %(count)s") % {"count": count}) if self.is_estimate else count


# -------------------------------------------------------------------------------------------------------------
# Jobs


class JobChangeList(ChangeList):
    """The job list leaves the big columns in the database: a payload alone may be 1 MiB."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        queryset: QuerySet[Any] = super().get_queryset(request, exclude_parameters)
        return queryset.defer("payload", "result", "traceback", "progress_data", "failed_items")


class JobTypeFilter(admin.SimpleListFilter):
    """Registered types, without a DISTINCT over the whole table."""

    title = _("type")
    parameter_name = "job_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(t.name, t.name) for t in registry.all_types()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(job_type=self.value()) if self.value() else queryset


class QueueFilter(admin.SimpleListFilter):
    title = _("queue")
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted({t.queue for t in registry.all_types()})]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(queue=self.value()) if self.value() else queryset


@admin.register(JobLog)
class JobLogAdmin(JobLogAdminBase):
    list_display = (
        "short_id",
        "job_type",
        "status_badge",
        "progress_bar",
        "owner",
        "attempts",
        "created",
        "duration",
    )
    list_display_links = ("short_id",)
    list_filter = (
        "status",
        JobTypeFilter,
        QueueFilter,
        "priority",
        ("created_at", admin.DateFieldListFilter),
    )
    search_help_text = _("A job id (or its first characters), an owner's username, or words of the error.")
    search_fields = ("id",)  # shows the search box; get_search_results() does the searching
    list_select_related = ("owner",)
    list_per_page = 50
    sortable_by = ("job_type", "status_badge", "created")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    actions = ["retry", "cancel", "delete_selected"]
    change_form_template = "admin/jobs/joblog/change_form.html"
    change_list_template = "admin/jobs/joblog/change_list.html"
    readonly_fields = (
        "id",
        "job_type",
        "queue",
        "priority",
        "status_display",
        "progress_display",
        "attempts_display",
        "owner",
        "schedule",
        "worker_name",
        "idempotency_key",
        "created_at",
        "enqueued_at",
        "run_at",
        "started_at",
        "finished_at",
        "duration",
        "payload_json",
        "result_json",
        "error_display",
        "traceback_display",
        "failed_items_display",
        "timeline",
    )

    class Media:
        css = CSS
        js = ["jobs/admin/live.js"]

    # Permissions ------------------------------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are submitted by code, the API and schedules

    def has_change_permission(self, request: HttpRequest, obj: JobLog | None = None) -> bool:
        return False  # the history is not edited; steering goes through has_cancel_permission()

    def has_cancel_permission(self, request: HttpRequest, obj: JobLog | None = None) -> bool:
        """Retry and cancel (this job, or jobs in general)."""
        return can_operate_jobs(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: JobLog | None = None) -> bool:
        # A job still waiting or running is canceled first: deleting it would leave its worker without a row.
        if obj is not None and obj.status not in TERMINAL_STATUSES:
            return False
        return super().has_delete_permission(request, obj)

    # The list ---------------------------------------------------------------------------------------------

    def action_checkbox(self, job: JobLog) -> SafeString:
        # Django renders this checkbox through the form widget templates, which was half the cost of a page of
        # jobs; the same markup, written out.
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            job.pk,
            str(_("Select this object for an action - {}")).format(job),
        )

    @admin.display(description=_("id"))
    def short_id(self, job: JobLog) -> str:
        return job.short_id

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, job: JobLog) -> SafeString:
        return status_badge(job.status, job.pk)

    @admin.display(description=_("progress"))
    def progress_bar(self, job: JobLog) -> SafeString:
        return progress_bar(job)

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, job: JobLog) -> SafeString | str:
        return compact_time(job.created_at)

    @admin.display(description=_("duration"))
    def duration(self, job: JobLog) -> str:
        if job.started_at is None:
            return "—"
        end = job.finished_at or timezone.now()
        return format_duration(max(0.0, (end - job.started_at).total_seconds()))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[JobLog], search_term: str
    ) -> tuple[QuerySet[JobLog], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        # Every branch is an index scan, so that PostgreSQL can OR them as bitmaps instead of reading the table:
        # owners are looked up first (a subquery in the OR would make it scan), errors through a partial index.
        User = get_user_model()
        owner_ids = list(
            User._default_manager.filter(**{f"{User.USERNAME_FIELD}__iexact": term}).values_list("pk", flat=True)
        )
        match = Q(owner_id__in=owner_ids) if owner_ids else Q(pk__in=[])
        if (ids := id_range(term)) is not None:
            # An id (or its first digits) is a range on the primary key; error text is not searched.
            match |= Q(pk__range=ids)
        else:
            match |= ~Q(error_message="") & (Q(error_type__iexact=term) | Q(error_message__icontains=term))
        return queryset.filter(match), False

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return JobChangeList

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = {"queues_url": reverse(f"{self.admin_site.name}:jobs_queue_changelist"), **(extra_context or {})}
        return super().changelist_view(request, context)

    # Actions ----------------------------------------------------------------------------------------------

    @admin.action(permissions=["cancel"], description=_("Retry selected failed or canceled jobs"))
    def retry(self, request: HttpRequest, queryset: QuerySet[JobLog]) -> None:
        self._steer(request, queryset, services.retry_job, _("Retried"), _("could not be retried"))

    @admin.action(permissions=["cancel"], description=_("Cancel selected jobs"))
    def cancel(self, request: HttpRequest, queryset: QuerySet[JobLog]) -> None:
        self._steer(request, queryset, services.cancel_job, _("Canceled"), _("could not be canceled"))

    def _steer(self, request: HttpRequest, queryset: QuerySet[JobLog], service: Any, done: Any, failed: Any) -> None:
        succeeded = 0
        problems: list[str] = []
        for job in queryset.order_by("created_at").iterator():
            if not self.has_cancel_permission(request, job):
                problems.append(f"{job.short_id}: {_('you may not steer this job')}")
                continue
            try:
                service(job, user=request.user)
            except JobsError as exc:
                problems.append(f"{job.short_id}: {exc}")
                continue
            succeeded += 1
        if succeeded:
            count = ngettext("%(count)d job", "%(count)d jobs", succeeded) % {"count": succeeded}
            self.message_user(request, f"{done} {count}.", messages.SUCCESS)
        if problems:
            count = ngettext("%(count)d job", "%(count)d jobs", len(problems)) % {"count": len(problems)}
            shown = "; ".join(problems[:10]) + (" …" if len(problems) > 10 else "")
            self.message_user(request, f"{capfirst(count)} {failed}: {shown}", messages.ERROR)

    @admin.action(permissions=["delete"], description=_("Delete selected finished jobs"))
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[JobLog]) -> HttpResponse | None:
        unfinished = queryset.exclude(status__in=TERMINAL_STATUSES).count()
        if unfinished:
            self.message_user(
                request,
                ngettext(
                    "%(count)d job is still waiting or running and was left alone: cancel it first.",
                    "%(count)d jobs are still waiting or running and were left alone: cancel them first.",
                    unfinished,
                )
                % {"count": unfinished},
                messages.WARNING,
            )
        finished = queryset.filter(status__in=TERMINAL_STATUSES)
        if not finished.exists():
            return None
        # Django's own action: the confirmation page, then delete_queryset() and the admin log.
        return django_delete_selected(self, request, finished)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[JobLog]) -> None:
        queryset.filter(status__in=TERMINAL_STATUSES).delete()

    def get_deleted_objects(
        self, objs: Sequence[JobLog] | QuerySet[JobLog], request: HttpRequest
    ) -> tuple[list[Any], dict[Any, int], set[Any], list[Any]]:
        # Django would list every event of every job, one line each: say how many instead.
        jobs = list(objs)
        listed = [
            format_html(
                '{}: <a href="{}">{}</a>',
                capfirst(JobLog._meta.verbose_name),
                reverse(f"{self.admin_site.name}:jobs_joblog_change", args=[quote(job.pk)]),
                job,
            )
            for job in jobs
        ]
        events = JobEvent.objects.filter(job__in=[job.pk for job in jobs]).count()
        counts = {JobLog._meta.verbose_name_plural: len(jobs), JobEvent._meta.verbose_name_plural: events}
        refused = any(not self.has_delete_permission(request, job) for job in jobs)
        return listed, counts, ({JobLog._meta.verbose_name} if refused else set()), []

    # The detail page --------------------------------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: JobLog | None = None) -> Any:
        fieldsets: list[tuple[Any, dict[str, Any]]] = [
            (
                None,
                {
                    "fields": (
                        "status_display",
                        "progress_display",
                        ("job_type", "queue", "priority"),
                        "attempts_display",
                        "owner",
                        "schedule",
                        "worker_name",
                        "id",
                    )
                },
            ),
            (
                _("Timing"),
                {"fields": (("created_at", "enqueued_at", "run_at"), ("started_at", "finished_at", "duration"))},
            ),
            (_("Payload"), {"fields": ("payload_json", "idempotency_key")}),
        ]
        if obj is not None and obj.result is not None:
            fieldsets.append((_("Result"), {"fields": ("result_json",)}))
        if obj is not None and obj.failed_items_count:
            fieldsets.append((_("Failed items"), {"fields": ("failed_items_display",)}))
        if obj is not None and (obj.error_type or obj.error_message):
            fieldsets.append((_("Error"), {"fields": ("error_display", "traceback_display")}))
        fieldsets.append((_("Timeline"), {"fields": ("timeline",)}))
        return fieldsets

    @admin.display(description=_("status"))
    def status_display(self, job: JobLog) -> SafeString:
        note = ""
        if job.cancel_requested_at and job.status == JobStatus.RUNNING:
            note = format_html(' <span class="jobs-quiet">{}</span>', _("cancel requested"))
        return format_html("{}{}", status_badge(job.status, job.pk), note)

    @admin.display(description=_("progress"))
    def progress_display(self, job: JobLog) -> SafeString:
        data = job.progress_data or {}
        detail = ""
        if "current" in data and "total" in data:
            detail = f"{data['current']} / {data['total']}"
        elif "current" in data:
            detail = str(data["current"])
        live = job.status not in TERMINAL_STATUSES
        return format_html(
            '<div class="jobs-live" data-job-id="{}" data-live="{}" data-ws-path="/ws/jobs/{}/" data-poll-url="{}">'
            '{}<div class="jobs-progress-text"><span data-field="message">{}</span> '
            '<span class="jobs-quiet" data-field="stage">{}</span> <span class="jobs-quiet" data-field="detail">{}'
            '</span> <span class="jobs-live-state jobs-quiet" data-field="live-state"></span></div></div>',
            job.pk,
            "1" if live else "",
            job.pk,
            reverse(f"{self.admin_site.name}:jobs_joblog_data", args=[quote(job.pk)]),
            progress_bar(job),
            job.progress_message,
            f"[{job.progress_stage}]" if job.progress_stage else "",
            detail,
        )

    @admin.display(description=_("attempts"))
    def attempts_display(self, job: JobLog) -> str:
        values = {"n": job.attempts, "max": job.max_attempts, "before": job.attempts_before_retry}
        if job.attempts_before_retry:
            return str(_("%(n)d (%(before)d before the last manual retry, which allowed %(max)d more)") % values)
        return str(_("%(n)d of at most %(max)d") % values)

    @admin.display(description=_("payload"))
    def payload_json(self, job: JobLog) -> SafeString:
        return pretty_json(job.payload)

    @admin.display(description=_("result"))
    def result_json(self, job: JobLog) -> SafeString:
        return pretty_json(job.result)

    @admin.display(description=_("error"))
    def error_display(self, job: JobLog) -> SafeString:
        return format_html('<span class="jobs-error"><strong>{}</strong>: {}</span>', job.error_type, job.error_message)

    @admin.display(description=_("traceback"))
    def traceback_display(self, job: JobLog) -> SafeString:
        return format_html('<pre class="jobs-pre jobs-traceback">{}</pre>', job.traceback or "—")

    @admin.display(description=_("failed items"))
    def failed_items_display(self, job: JobLog) -> SafeString:
        items = (job.failed_items or [])[:200]
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", ((i["item"], i["error"]) for i in items))
        more = job.failed_items_count - len(items)
        note = format_html('<p class="jobs-quiet">{}</p>', _("%(n)d more not shown") % {"n": more}) if more else ""
        return format_html(
            '<table class="jobs-table"><thead><tr><th>{}</th><th>{}</th></tr></thead><tbody>{}</tbody></table>{}',
            _("item"),
            _("error"),
            rows,
            note,
        )

    @admin.display(description=_("events"))
    def timeline(self, job: JobLog) -> SafeString:
        limit = 500
        events = list(JobEvent.objects.filter(job=job).order_by("created_at", "id")[: limit + 1])
        users = self._usernames(e.data.get("by") for e in events if isinstance(e.data, dict))
        rows = format_html_join("", "{}", ((self._event_row(e, users),) for e in events[:limit]))
        more = format_html('<p class="jobs-quiet">{}</p>', _("Later events not shown.")) if len(events) > limit else ""
        return format_html(
            '<table class="jobs-table jobs-timeline"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th>'
            "<th>{}</th></tr></thead><tbody>{}</tbody></table>{}",
            _("when"),
            _("event"),
            _("status"),
            _("attempt"),
            _("details"),
            rows,
            more,
        )

    @staticmethod
    def _usernames(pks: Iterable[Any]) -> dict[Any, str]:
        wanted = {pk for pk in pks if pk is not None}
        if not wanted:
            return {}
        User = get_user_model()
        return {u.pk: u.get_username() for u in User._default_manager.filter(pk__in=wanted)}

    @staticmethod
    def _event_row(event: JobEvent, users: dict[Any, str]) -> SafeString:
        data = dict(event.data) if isinstance(event.data, dict) else {}
        trace = data.pop("traceback", "")
        parts: list[SafeString] = []
        if event.message:
            parts.append(format_html("<div>{}</div>", event.message))
        if "by" in data:
            by = data.pop("by")
            parts.append(format_html('<div class="jobs-quiet">{} {}</div>', _("by"), users.get(by, by or _("system"))))
        for key, value in sorted(data.items()):
            parts.append(format_html('<div class="jobs-quiet">{}: {}</div>', key.replace("_", " "), value))
        if trace:
            parts.append(
                format_html(
                    '<details><summary>{}</summary><pre class="jobs-pre jobs-traceback">{}</pre></details>',
                    _("traceback"),
                    trace,
                )
            )
        when = timezone.localtime(event.created_at)
        return format_html(
            '<tr class="jobs-event jobs-event--{}"><td class="nowrap" title="{}">{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td><td>{}</td></tr>",
            event.kind,
            when.isoformat(),
            f"{when:%Y-%m-%d %H:%M:%S}",
            event.get_kind_display(),
            status_badge(event.status) if event.status else "",
            event.attempt or "",
            mark_safe("".join(parts)),  # noqa: S308 - every part was built with format_html()
        )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        job = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if job is not None and self.has_cancel_permission(request, job):
            context["can_retry"] = job.status in (JobStatus.FAILED, JobStatus.CANCELED)
            context["can_cancel"] = job.status not in TERMINAL_STATUSES and not job.cancel_requested_at
        return super().change_view(request, object_id, form_url, context)

    # Buttons of the detail page and its live data ---------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/retry/", wrap(self.retry_view), name=f"{info}_retry"),
            path("<path:object_id>/cancel/", wrap(self.cancel_view), name=f"{info}_cancel"),
            path("<path:object_id>/data/", wrap(self.data_view), name=f"{info}_data"),
            *super().get_urls(),
        ]

    def _job_or_404(self, request: HttpRequest, object_id: str) -> JobLog:
        job = self.get_object(request, object_id)
        if job is None:
            raise Http404(_("No such job."))
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        return job

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._button(request, object_id, services.retry_job, _("The job was sent back to its queue."))

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._button(request, object_id, services.cancel_job, _("Cancellation requested."))

    def _button(self, request: HttpRequest, object_id: str, service: Any, done: Any) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        job = self._job_or_404(request, object_id)
        if not self.has_cancel_permission(request, job):
            raise PermissionDenied
        try:
            job = service(job, user=request.user)
        except JobsError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, str(done), messages.SUCCESS)
        return HttpResponseRedirect(reverse(f"{self.admin_site.name}:jobs_joblog_change", args=[quote(job.pk)]))

    def data_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """The job's snapshot, as ``ws/jobs/<id>/`` sends it, for browsers whose websocket failed."""
        return JsonResponse(job_json(self._job_or_404(request, object_id), request.user))


# -------------------------------------------------------------------------------------------------------------
# Schedules


def describe_timing(schedule: JobSchedule) -> str:
    """The schedule's timing in words: the cron expression spelled out, the interval, or the one date."""
    if schedule.kind == ScheduleKind.CRON:
        if not schedule.cron:
            return ""
        from cron_descriptor import ExpressionDescriptor, Options

        options = Options()
        options.use_24hour_time_format = True
        try:
            words = str(ExpressionDescriptor(schedule.cron, options).get_description())
        except Exception:  # noqa: BLE001 - cron-descriptor has many error types; the form explains what is wrong
            return ""
        return f"{words} ({schedule.timezone or 'UTC'})"
    if schedule.kind == ScheduleKind.INTERVAL:
        if not schedule.interval_seconds:
            return ""
        return str(_("Every %(interval)s") % {"interval": format_interval(schedule.interval_seconds)})
    if schedule.run_at is None:
        return ""
    return str(_("Once, at %(when)s") % {"when": format_in_zone(schedule.run_at, schedule.timezone)})


def format_interval(seconds: int) -> str:
    for size, one, many in ((86400, "day", "days"), (3600, "hour", "hours"), (60, "minute", "minutes")):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {one if n == 1 else many}" if n != 1 else one
    return f"{seconds} seconds" if seconds != 1 else "second"


def format_in_zone(moment: datetime, zone: str) -> str:
    try:
        local = moment.astimezone(ZoneInfo(zone or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        local = moment
    return f"{local:%a %Y-%m-%d %H:%M} {zone or 'UTC'}"


def type_choices() -> list[tuple[str, str]]:
    return [("", "---------"), *((t.name, t.name) for t in registry.all_types())]


class JobScheduleForm(JobScheduleFormBase):
    """Checked by the API's ScheduleSerializer: one set of rules for schedules, wherever they are edited."""

    job_type = forms.ChoiceField(
        label=_("Type"), choices=type_choices, help_text=_("The registered job type each run submits.")
    )

    class Meta:
        model = JobSchedule
        fields = [
            "name",
            "job_type",
            "payload",
            "priority",
            "enabled",
            "kind",
            "cron",
            "interval_seconds",
            "run_at",
            "timezone",
            "overlap",
        ]
        help_texts = {
            "name": _("Unique; shown in logs and on the jobs it submits."),
            "payload": _("A JSON object, checked by the job type's payload serializer."),
            "kind": _("Cron: at the times of a cron expression. Interval: every N seconds. Once: at one moment."),
            "cron": _("Five fields (minute hour day-of-month month day-of-week), e.g. “*/5 * * * *” or “0 9 * * 1-5”."),
            "interval_seconds": _("For interval schedules: seconds between runs, 1 or more."),
            "run_at": _("For one-off schedules: when to run."),
            "timezone": _("The IANA time zone cron times are read in, e.g. “Europe/Paris”."),
            "overlap": _("Whether a run may start while the previous one is still waiting or running."),
            "enabled": _("Disabled schedules keep their settings but submit nothing."),
        }
        widgets = {"payload": forms.Textarea(attrs={"rows": 6, "class": "jobs-code"})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.job_type if self.instance.pk else None
        field = self.fields["job_type"]
        if current and isinstance(field, forms.ChoiceField) and current not in dict(type_choices()):
            # A schedule whose type is no longer registered still shows what it was.
            field.choices = [*type_choices(), (current, f"{current} ({_('not registered')})")]

    def clean(self) -> dict[str, Any]:
        from .api.serializers import ScheduleSerializer

        cleaned = super().clean() or {}
        names = ("job_type", "payload", "priority", "enabled", "kind", "cron", "interval_seconds", "run_at", "timezone")
        if any(name in self.errors for name in names):
            return cleaned
        data = {("type" if name == "job_type" else name): cleaned.get(name) for name in (*names, "overlap")}
        if data["cron"] is None:
            data["cron"] = ""
        if data["payload"] is None:  # an empty textarea: no payload
            data["payload"] = {}
        # partial: the form checks the name (and its uniqueness) itself.
        serializer = ScheduleSerializer(instance=self.instance if self.instance.pk else None, data=data, partial=True)
        if not serializer.is_valid():
            for name, problems in serializer.errors.items():
                field = "job_type" if name == "type" else name
                self.add_error(field if field in self.fields else None, list(flat_errors(problems)))
            return cleaned
        valid = serializer.validated_data
        for name in ("payload", "cron", "interval_seconds", "run_at"):
            if name in valid:
                cleaned[name] = valid[name]
        if "next_run_at" in valid:
            self.instance.next_run_at = valid["next_run_at"]
        return cleaned


def flat_errors(problems: Any, prefix: str = "") -> Iterable[str]:
    """DRF's nested error lists and dicts as lines a form can show ("name: This field is required.")."""
    if isinstance(problems, dict):
        for key, value in problems.items():
            label = "" if key == "non_field_errors" else f"{prefix}{key}: "
            yield from flat_errors(value, label)
    elif isinstance(problems, list | tuple):
        for problem in problems:
            yield from flat_errors(problem, prefix)
    else:
        yield f"{prefix}{problems}"


@admin.register(JobSchedule)
class JobScheduleAdmin(JobScheduleAdminBase):
    form = JobScheduleForm
    list_display = ("name", "job_type", "timing", "enabled", "next_run", "last_run", "last_job_link")
    list_filter = ("enabled", "kind", "job_type")
    search_fields = ("name", "job_type")
    list_select_related = ("last_job",)
    actions = ["enable", "disable", "run_now"]
    change_form_template = "admin/jobs/jobschedule/change_form.html"
    readonly_fields = (
        "timing_in_words",
        "upcoming",
        "next_run_at",
        "last_run_at",
        "last_job_link",
        "owner",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "job_type", "payload", "priority", "enabled")}),
        (
            _("When"),
            {
                "fields": ("kind", "cron", "interval_seconds", "run_at", "timezone", "timing_in_words", "upcoming"),
                "description": _("Fill in the field of the chosen kind; the others are cleared on save."),
            },
        ),
        (_("Runs"), {"fields": ("overlap", "next_run_at", "last_run_at", "last_job_link", "owner")}),
        (_("Record"), {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )

    class Media:
        css = CSS
        js = ["jobs/admin/schedule.js"]

    @admin.display(description=_("timing"))
    def timing(self, schedule: JobSchedule) -> str:
        return describe_timing(schedule) or "—"

    @admin.display(description=_("next run"), ordering="next_run_at")
    def next_run(self, schedule: JobSchedule) -> SafeString | str:
        return compact_time(schedule.next_run_at)

    @admin.display(description=_("last run"), ordering="last_run_at")
    def last_run(self, schedule: JobSchedule) -> SafeString | str:
        return compact_time(schedule.last_run_at)

    @admin.display(description=_("in words"))
    def timing_in_words(self, schedule: JobSchedule) -> SafeString:
        return format_html('<span data-schedule-preview="words">{}</span>', describe_timing(schedule) or "—")

    @admin.display(description=_("next five runs"))
    def upcoming(self, schedule: JobSchedule) -> SafeString:
        runs: list[datetime] = []
        if schedule.pk and schedule.enabled:
            try:
                runs = scheduler.upcoming_runs(schedule, 5)
            except (ValueError, KeyError):
                runs = []
        items = format_html_join("", "<li>{}</li>", ((format_in_zone(r, schedule.timezone),) for r in runs))
        if not schedule.pk:
            nothing: Any = "—"
        else:
            nothing = _("none: the schedule is disabled") if not schedule.enabled else _("none")
        empty = "" if runs else format_html("<li>{}</li>", nothing)
        return format_html('<ul class="jobs-runs" data-schedule-preview="runs">{}{}</ul>', items, empty)

    @admin.display(description=_("last job"))
    def last_job_link(self, schedule: JobSchedule) -> SafeString | str:
        job = schedule.last_job
        if job is None:
            return "—"
        url = reverse(f"{self.admin_site.name}:jobs_joblog_change", args=[quote(job.pk)])
        return format_html('<a href="{}">{}</a> {}', url, job.short_id, status_badge(job.status, job.pk))

    def save_model(self, request: HttpRequest, obj: JobSchedule, form: Any, change: bool) -> None:
        if not change and obj.owner_id is None:
            obj.owner = request.user  # type: ignore[assignment]  # runs are submitted as the creator, like the API
        super().save_model(request, obj, form, change)

    @admin.action(permissions=["change"], description=_("Enable selected schedules"))
    def enable(self, request: HttpRequest, queryset: QuerySet[JobSchedule]) -> None:
        self._each(request, queryset, lambda s: scheduler.set_enabled(s, True), _("Enabled"))

    @admin.action(permissions=["change"], description=_("Disable selected schedules"))
    def disable(self, request: HttpRequest, queryset: QuerySet[JobSchedule]) -> None:
        self._each(request, queryset, lambda s: scheduler.set_enabled(s, False), _("Disabled"))

    @admin.action(permissions=["change"], description=_("Run selected schedules now"))
    def run_now(self, request: HttpRequest, queryset: QuerySet[JobSchedule]) -> None:
        self._each(request, queryset, lambda s: self._run(request, s), _("Submitted a job for"))

    @staticmethod
    def _run(request: HttpRequest, schedule: JobSchedule) -> JobLog:
        # As its owner, like its regular ticks; a schedule without one runs as whoever pressed the button.
        return scheduler.run_schedule_now(schedule, user=schedule.owner or request.user)

    def _each(self, request: HttpRequest, queryset: QuerySet[JobSchedule], apply: Any, done: Any) -> None:
        names: list[str] = []
        problems: list[str] = []
        for schedule in queryset.select_related("owner"):
            if not self.has_change_permission(request, schedule):
                problems.append(f"{schedule.name}: {_('you may not change this schedule')}")
                continue
            try:
                apply(schedule)
            except JobsError as exc:
                problems.append(f"{schedule.name}: {exc}")
                continue
            names.append(schedule.name)
        if names:
            self.message_user(request, f"{done} {', '.join(names)}.", messages.SUCCESS)
        if problems:
            self.message_user(request, "; ".join(problems), messages.ERROR)

    def get_urls(self) -> list[URLPattern]:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("describe/", wrap(self.describe_view), name=f"{info}_describe"),
            path("<path:object_id>/run/", wrap(self.run_view), name=f"{info}_run"),
            *super().get_urls(),
        ]

    def run_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        schedule = self.get_object(request, object_id)
        if schedule is None:
            raise Http404(_("No such schedule."))
        if not self.has_change_permission(request, schedule):
            raise PermissionDenied
        change_url = reverse(f"{self.admin_site.name}:jobs_jobschedule_change", args=[quote(schedule.pk)])
        try:
            job = self._run(request, schedule)
        except JobsError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(change_url)
        job_url = reverse(f"{self.admin_site.name}:jobs_joblog_change", args=[quote(job.pk)])
        self.message_user(
            request, format_html('{} <a href="{}">{}</a>.', _("Submitted job"), job_url, job.short_id), messages.SUCCESS
        )
        return HttpResponseRedirect(change_url)

    def describe_view(self, request: HttpRequest) -> JsonResponse:
        """The timing in words and the next five runs of what the form holds, while it is being edited."""
        if not (self.has_view_permission(request) or self.has_add_permission(request)):
            raise PermissionDenied
        query = request.GET
        interval = query.get("interval_seconds", "")
        schedule = JobSchedule(
            kind=query.get("kind", ScheduleKind.CRON),
            cron=" ".join(query.get("cron", "").split()),
            interval_seconds=int(interval) if interval.isdigit() else None,
            run_at=parse_run_at(query.get("run_at_0", ""), query.get("run_at_1", "")),
            timezone=query.get("timezone") or "UTC",
        )
        try:
            scheduler.validate_timing(
                schedule.kind, schedule.cron, schedule.interval_seconds, schedule.run_at, schedule.timezone
            )
            runs = scheduler.upcoming_runs(schedule, 5)
        except (InvalidSchedule, ValueError, KeyError) as exc:
            return JsonResponse({"ok": False, "error": str(exc), "words": "", "runs": []})
        return JsonResponse(
            {
                "ok": True,
                "error": "",
                "words": describe_timing(schedule),
                "runs": [format_in_zone(run, schedule.timezone) for run in runs],
            }
        )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().change_view(request, object_id, form_url, self._form_context(extra_context))

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None) -> Any:
        return super().add_view(request, form_url, self._form_context(extra_context))

    def _form_context(self, extra_context: dict[str, Any] | None) -> dict[str, Any]:
        return {"describe_url": reverse(f"{self.admin_site.name}:jobs_jobschedule_describe"), **(extra_context or {})}


def parse_run_at(day: str, time: str) -> datetime | None:
    """The admin's split date and time inputs as an aware datetime (in the current time zone), or None."""
    moment = parse_datetime(f"{day.strip()} {time.strip() or '00:00'}") if day.strip() else None
    if moment is not None and timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


# -------------------------------------------------------------------------------------------------------------
# Queues


@admin.register(Queue)
class QueueAdmin(QueueAdminBase):
    """The queues dashboard in place of a change list: counts, workers, charts, pause/resume/requeue/empty."""

    class Media:
        css = CSS

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        user = request.user
        opts = JobLog._meta
        return bool(
            user.has_perm(f"{opts.app_label}.{get_permission_codename('view', opts)}") or can_operate_jobs(user)
        )

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return can_operate_jobs(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(QueuesView.as_view(model_admin=self)), name=f"{info}_changelist"),
            path("data/", wrap(QueuesDataView.as_view(model_admin=self)), name=f"{info}_data"),
            path(
                "<str:name>/<slug:action>/",
                wrap(QueueActionView.as_view(model_admin=self)),
                name=f"{info}_action",
            ),
        ]
