"""The job list and a job's page in the admin: read-only, with retry, cancel, delete and live progress."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import NotSupportedError
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import URLPattern, path, reverse
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import registry, services
from ..access import may_steer_all_jobs
from ..exceptions import JobsError
from ..job_json import job_json
from ..models import TERMINAL_STATUSES, JobEvent, JobLog, JobStatus
from .display import (
    CSS,
    compact_time,
    event_timeline,
    failed_items_table,
    live_duration,
    live_progress,
    pretty_json,
    progress_bar,
    status_badge,
)

if TYPE_CHECKING:
    JobLogAdminBase = admin.ModelAdmin[JobLog]
else:  # Django's classes are not generic at runtime
    JobLogAdminBase = admin.ModelAdmin


def can_operate_jobs(user: Any) -> bool:
    """Retry, cancel, pause, resume, requeue and empty: the admin never edits a job's fields, so the model's
    "change" permission is the right to steer jobs and queues."""
    return may_steer_all_jobs(user)


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
        # The planner's estimate, where the database explains a plan as JSON in PostgreSQL's shape; None elsewhere.
        try:
            plan = json.loads(queryset.order_by().explain(format="json"))
            return int(plan[0]["Plan"]["Plan Rows"])
        except (ValueError, KeyError, IndexError, TypeError, NotSupportedError):
            return None

    @property
    def count_display(self) -> str:
        count = number_format(self.count, force_grouping=True)
        return str(_("about %(count)s") % {"count": count}) if self.is_estimate else count


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
        # The markup Django's form widget templates would render, written out: a page lists many jobs, and a
        # template render per row adds up.
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
    def duration(self, job: JobLog) -> SafeString | str:
        return live_duration(job)

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
        return live_progress(job, reverse(f"{self.admin_site.name}:jobs_joblog_data", args=[quote(job.pk)]))

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
        return failed_items_table(job)

    @admin.display(description=_("events"))
    def timeline(self, job: JobLog) -> SafeString:
        limit = 500
        events = list(JobEvent.objects.filter(job=job).order_by("created_at", "id")[: limit + 1])
        users = self._usernames(e.data.get("by") for e in events if isinstance(e.data, dict))
        return event_timeline(events[:limit], users, more=len(events) > limit)

    @staticmethod
    def _usernames(pks: Iterable[Any]) -> dict[Any, str]:
        wanted = {pk for pk in pks if pk is not None}
        if not wanted:
            return {}
        User = get_user_model()
        return {u.pk: u.get_username() for u in User._default_manager.filter(pk__in=wanted)}

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        job = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if job is not None and self.has_cancel_permission(request, job):
            context["can_retry"] = job.status in (JobStatus.FAILED, JobStatus.CANCELED)
            # Also once a cancel was asked for: pressed again, it sends the request to the worker again.
            context["can_cancel"] = job.status not in TERMINAL_STATUSES
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
        job = self._job_or_404(request, object_id)
        return JsonResponse(job_json(job, request.user, sensitive=registry.sensitive_keys(job.job_type)))
