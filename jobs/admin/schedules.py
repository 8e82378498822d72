"""Schedules in the admin: an editable form checked like the API, the timing in words, enable, disable, run now."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .. import registry, scheduler
from ..access import may_see_all_jobs
from ..api.serializers import ScheduleSerializer
from ..exceptions import InvalidSchedule, JobsError
from ..models import JobLog, JobSchedule, JobStatus, ScheduleKind
from .display import CSS, compact_time, format_duration, status_badge

if TYPE_CHECKING:
    JobScheduleAdminBase = admin.ModelAdmin[JobSchedule]
    JobScheduleFormBase = forms.ModelForm[JobSchedule]
else:  # Django's classes are not generic at runtime
    JobScheduleAdminBase = admin.ModelAdmin
    JobScheduleFormBase = forms.ModelForm


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

    # Who is saving: the schedule's next owner (JobScheduleAdmin.get_form sets it; None outside the admin).
    editor: Any = None

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
        serializer = ScheduleSerializer(
            instance=self.instance if self.instance.pk else None,
            data=data,
            partial=True,
            context={"user": self.editor},
        )
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


RECENT_RUNS = 20
RUN_FIELDS = ("id", "status", "created_at", "started_at", "finished_at", "schedule_id")


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
            except scheduler.UNCOMPUTABLE:
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

    def get_form(
        self, request: HttpRequest, obj: JobSchedule | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"editor": request.user})

    def save_model(self, request: HttpRequest, obj: JobSchedule, form: Any, change: bool) -> None:
        # Runs are submitted as the owner: whoever last added or changed it, like the API.
        obj.owner = request.user  # type: ignore[assignment]
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
        except (InvalidSchedule, *scheduler.UNCOMPUTABLE) as exc:
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

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: JobSchedule | None = None,
    ) -> HttpResponse:
        if obj is not None and obj.pk:
            context.update(self.recent_runs(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def recent_runs(self, request: HttpRequest, schedule: JobSchedule) -> dict[str, Any]:
        """The schedule's newest runs, as far as the user may see jobs, and a link to all of them in the job list."""
        # The FK's index finds the schedule's jobs; retention keeps their number bounded.
        runs = JobLog.objects.visible_to(request.user).filter(schedule=schedule)
        linked = may_see_all_jobs(request.user)  # the job admin's pages ask for the same permission
        site = self.admin_site.name
        now = timezone.now()
        rows = []
        for job in runs.order_by("-created_at").only(*RUN_FIELDS)[:RECENT_RUNS]:
            end = job.finished_at or (now if job.status == JobStatus.RUNNING else None)
            rows.append(
                {
                    "job": job,
                    "url": reverse(f"{site}:jobs_joblog_change", args=[quote(job.pk)]) if linked else "",
                    "status": status_badge(job.status, job.pk),
                    "duration": format_duration((end - job.started_at).total_seconds())
                    if end and job.started_at
                    else "",
                }
            )
        query = urlencode({"schedule__id__exact": schedule.pk})
        return {
            "recent_runs": rows,
            "recent_runs_total": runs.count(),
            "recent_runs_cap": RECENT_RUNS,
            "all_runs_url": f"{reverse(f'{site}:jobs_joblog_changelist')}?{query}" if linked else "",
        }

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
