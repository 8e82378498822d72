"""The admin's queues page: QueueAdmin and a few generic views over jobs.monitoring and jobs.services.

Filters are query parameters (``?queue=deploy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect, JsonResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.views.generic import TemplateView, View

from .. import registry, services
from ..access import may_see_all_jobs
from ..exceptions import QueueNotFound
from ..models import WAITING_STATUSES, JobLog, JobStatus, Queue
from ..monitoring import QueueStats, TimingStats, count_by_priority, get_finished_series, get_timings, list_queue_stats
from ..types import PRIORITIES
from .display import CSS, format_duration
from .jobs import can_operate_jobs

if TYPE_CHECKING:
    QueueAdminBase = admin.ModelAdmin[Queue]
else:  # Django's classes are not generic at runtime
    QueueAdminBase = admin.ModelAdmin


WS_PATH = "/ws/dashboard/"
POLL_SECONDS = 5
JOB_ID_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"  # replaced by the page's script


class DashboardView(View):
    """Staff reach these through admin_view() (others go to the login page); this checks the permission."""

    model_admin: Any = None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not self.model_admin.has_view_permission(request):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def queue_names(self) -> list[str]:
        """Every job queue, or the one named by ``?queue=``."""
        names = sorted({t.queue for t in registry.all_types()})
        wanted = self.request.GET.get("queue")
        if wanted:
            if wanted not in names:
                raise Http404(_("There is no queue named %(name)r.") % {"name": wanted})
            return [wanted]
        return names

    def url(self, name: str, *args: Any) -> str:
        return reverse(f"{self.model_admin.admin_site.name}:jobs_queue_{name}", args=args)

    def snapshot(self) -> dict[str, Any]:
        """What the page shows, as JSON: the websocket's "queues" frame plus per-priority counts and charts."""
        names = self.queue_names()
        # One pass over the (queue, status, priority) index serves both; queues not shown are not counted.
        by_priority = count_by_priority(names)
        stats = [s for s in list_queue_stats(by_priority=by_priority) if s["name"] in names]
        return {
            "type": "queues",
            "queues": stats,
            "at": timezone.now().isoformat(),
            "priorities": by_priority,
            "series": get_finished_series(names),
        }


class QueuesView(DashboardView, TemplateView):
    template_name = "admin/jobs/queues.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        snapshot = self.snapshot()
        statuses = [(str(value), str(label)) for value, label in JobStatus.choices]
        site = self.model_admin.admin_site
        jobs_url = reverse(f"{site.name}:jobs_joblog_changelist")
        queues = [
            queue_context(stats, snapshot["priorities"][stats["name"]], statuses, jobs_url)
            for stats in snapshot["queues"]
        ]
        workers = workers_of(snapshot["queues"])
        for worker in workers:
            if worker["current_job"]:
                worker["current_job_url"] = reverse(f"{site.name}:jobs_joblog_change", args=[worker["current_job"]])
        # Not in the polled JSON: a day's and a week's figures move slowly, and cost more than the counts.
        timings = get_timings(q["name"] for q in snapshot["queues"])
        series = {**snapshot["series"], "week": timings["week"]}
        return {
            **super().get_context_data(**kwargs),
            **site.each_context(self.request),
            "title": _("Queues"),
            "opts": self.model_admin.opts,
            "queues": queues,
            "statuses": statuses,
            "workers": workers,
            "series": series,
            "totals": {
                span: {"succeeded": sum(data["succeeded"]), "failed": sum(data["failed"])}
                for span, data in series.items()
            },
            "timing_tables": [
                {
                    "key": "per-type",
                    "title": _("Wait and run time, last 24 hours"),
                    "note": _("per type; the newest %(n)s finished jobs of each queue")
                    % {"n": timings["sample_per_queue"]},
                    "label": _("Type"),
                    "rows": timing_rows(timings["per_type"]),
                },
                {
                    "key": "per-day",
                    "title": _("Wait and run time, last 7 days"),
                    "note": _("per day (UTC); the newest %(n)s finished jobs of each queue and day")
                    % {"n": timings["sample_per_queue_day"]},
                    "label": _("Day"),
                    "rows": timing_rows(timings["per_day"]),
                },
            ],
            "selected_queue": self.request.GET.get("queue", ""),
            "can_operate": self.model_admin.has_operate_permission(self.request),
            "ws_path": WS_PATH,
            "poll_seconds": POLL_SECONDS,
            "data_url": self.url("data") + (f"?{self.request.GET.urlencode()}" if self.request.GET else ""),
            "jobs_url": jobs_url,
            "job_url_template": reverse(f"{site.name}:jobs_joblog_change", args=[JOB_ID_PLACEHOLDER]),
        }


def queue_context(
    stats: QueueStats, by_priority: dict[str, dict[str, int]], statuses: list[tuple[str, str]], jobs_url: str
) -> dict[str, Any]:
    name = stats["name"]
    rows = [
        {
            "priority": priority,
            "cells": [count_cell(jobs_url, name, priority, s, by_priority[priority][s]) for s, _label in statuses],
            "waiting_in_redis": stats["waiting_in_redis"].get(priority),
            "empty": not any(by_priority[priority].values()) and not stats["waiting_in_redis"].get(priority),
        }
        for priority in PRIORITIES
    ]
    counts = stats["counts"]
    return {
        "name": name,
        "job_types": stats["job_types"],
        "paused": stats["paused"],
        "rows": rows,
        "total_cells": [count_cell(jobs_url, name, "all", s, counts.get(s, 0)) for s, _label in statuses],
        "summary_cells": [
            summary_cell(jobs_url, name, key, group, sum(counts.get(s, 0) for s in group))
            for key, group in SUMMARY.items()
        ],
        "waiting_in_redis": sum(stats["waiting_in_redis"].values()) if stats["waiting_in_redis"] else None,
        "throughput": stats["throughput"],
        "worker_count": len(stats["workers"]),
        "workers": sorted(w["name"] for w in stats["workers"]),
    }


def timing_rows(stats: list[TimingStats]) -> list[dict[str, Any]]:
    """Wait and run times as the page shows them: words, and bars (p50 inside p95) scaled to the table's longest."""
    longest = {
        kind: max((t[f"{kind}_p95"] or 0.0 for t in stats), default=0.0)  # type: ignore[literal-required]
        for kind in ("wait", "run")
    }
    rows = []
    for t in stats:
        row: dict[str, Any] = {"label": t["label"], "sampled": t["sampled"], "kinds": []}
        for kind in ("wait", "run"):
            p50, p95 = t[f"{kind}_p50"], t[f"{kind}_p95"]  # type: ignore[literal-required]
            row["kinds"].append(
                {
                    "name": kind,
                    "p50": "—" if p50 is None else format_duration(p50),
                    "p95": "—" if p95 is None else format_duration(p95),
                    "p50_width": round(100 * p50 / longest[kind], 1) if p50 and longest[kind] else 0,
                    "p95_width": round(100 * p95 / longest[kind], 1) if p95 and longest[kind] else 0,
                }
            )
        rows.append(row)
    return rows


# The compact row's counts: which statuses each column adds up (the page's script adds them up the same way).
SUMMARY: dict[str, tuple[str, ...]] = {
    "waiting": tuple(str(s) for s in WAITING_STATUSES),
    "running": (str(JobStatus.RUNNING),),
    "failed": (str(JobStatus.FAILED),),
}


def summary_cell(jobs_url: str, queue: str, key: str, statuses: tuple[str, ...], count: int) -> SafeString:
    """A count of a queue's row (waiting, running, failed): a link to those jobs in the job list."""
    if not count:
        return format_html('<td class="jobs-num" data-sum="{}:{}"><span class="jobs-zero">0</span></td>', queue, key)
    status = {"status__exact": statuses[0]} if len(statuses) == 1 else {"status__in": ",".join(statuses)}
    return format_html(
        '<td class="jobs-num" data-sum="{}:{}"><a href="{}?{}">{}</a></td>',
        queue,
        key,
        jobs_url,
        urlencode({"queue": queue, **status}),
        count,
    )


def count_cell(jobs_url: str, queue: str, priority: str, status: str, count: int) -> SafeString:
    """One count of the queue tables: a link to those jobs in the job list. Built here, not in the template: a
    page has hundreds of them, and the template language would be most of the page's cost."""
    key = f"{queue}:{priority}:{status}"
    if not count:
        return format_html('<td class="jobs-num" data-count="{}"><span class="jobs-zero">0</span></td>', key)
    query = {"queue": queue, **({"priority": priority} if priority != "all" else {}), "status__exact": status}
    return format_html(
        '<td class="jobs-num" data-count="{}"><a href="{}?{}">{}</a></td>', key, jobs_url, urlencode(query), count
    )


def workers_of(stats: list[QueueStats]) -> list[dict[str, Any]]:
    """Each worker once, with the queues (of those shown) it listens to."""
    workers: dict[str, dict[str, Any]] = {}
    for queue in stats:
        for worker in queue["workers"]:
            entry = workers.setdefault(worker["name"], {**worker, "queues": []})
            entry["queues"].append(queue["name"])
    for entry in workers.values():
        beat = entry.get("last_heartbeat")
        entry["last_heartbeat_at"] = parse_datetime(beat) if isinstance(beat, str) else None
    return sorted(workers.values(), key=lambda w: w["name"])


class QueuesDataView(DashboardView):
    """The page's data as JSON, polled every few seconds when the websocket is unavailable."""

    def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(self.snapshot())


@dataclass(frozen=True)
class QueueAction:
    service: Any
    title: Any
    explanation: Any
    done: Any
    dangerous: bool = False

    def count(self, name: str) -> int | None:
        return None


@dataclass(frozen=True)
class CountedAction(QueueAction):
    statuses: tuple[str, ...] = ()

    def count(self, name: str) -> int | None:
        return JobLog.objects.filter(queue=name, status__in=self.statuses).count()


ACTIONS: dict[str, QueueAction] = {
    "pause": QueueAction(
        service=lambda name, user: services.pause_queue(name, user=user),
        title=_("Pause queue “%(name)s”"),
        explanation=_(
            "Workers stop taking jobs from every priority level of this queue. Running jobs finish; new "
            "submissions still queue up and run once the queue is resumed."
        ),
        done=_("Paused queue “%(name)s”."),
    ),
    "resume": QueueAction(
        service=lambda name, user: services.resume_queue(name, user=user),
        title=_("Resume queue “%(name)s”"),
        explanation=_("Workers take jobs from this queue again."),
        done=_("Resumed queue “%(name)s”."),
    ),
    "requeue-failed": CountedAction(
        service=lambda name, user: services.requeue_failed(name, user=user),
        title=_("Requeue the failed jobs of “%(name)s”"),
        explanation=_(
            "Every failed job of this queue runs again under the same id, with a fresh budget of attempts. "
            "Failed jobs now: %(count)s."
        ),
        done=_("Requeued %(count)s failed jobs of “%(name)s”."),
        statuses=(JobStatus.FAILED,),
    ),
    "empty": CountedAction(
        service=lambda name, user: services.empty_queue(name, user=user),
        title=_("Empty queue “%(name)s”"),
        explanation=_(
            "Every job of this queue still waiting (pending, queued or scheduled) is canceled and taken out of "
            "Redis. Running jobs go on. Waiting jobs now: %(count)s. This cannot be undone, but canceled jobs "
            "can be retried one by one."
        ),
        done=_("Canceled %(count)s waiting jobs of “%(name)s”."),
        dangerous=True,
        statuses=WAITING_STATUSES,
    ),
}


class QueueActionView(DashboardView, TemplateView):
    """GET: a confirmation page. POST (with the CSRF token, like every admin form): do it."""

    template_name = "admin/jobs/queue_action.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if kwargs["action"] not in ACTIONS or kwargs["name"] not in {t.queue for t in registry.all_types()}:
            raise Http404(_("No such queue or action."))
        if not self.model_admin.has_operate_permission(request):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        name, action = kwargs["name"], ACTIONS[kwargs["action"]]
        count = action.count(name)
        values = {"name": name, "count": count}
        return {
            **super().get_context_data(**kwargs),
            **self.model_admin.admin_site.each_context(self.request),
            "title": action.title % values,
            "explanation": action.explanation % values,
            "dangerous": action.dangerous,
            "opts": self.model_admin.opts,
            "queue_name": name,
            "action": kwargs["action"],
            "dashboard_url": self.url("changelist"),
        }

    def post(self, request: HttpRequest, name: str, action: str) -> HttpResponse:
        chosen = ACTIONS[action]
        try:
            result = chosen.service(name, request.user)
        except QueueNotFound as exc:
            raise Http404(str(exc)) from None
        messages.success(request, str(chosen.done % {"name": name, "count": result}))
        return HttpResponseRedirect(f"{self.url('changelist')}#queue-{name}")


class QueueAdmin(QueueAdminBase):
    """The queues dashboard in place of a change list: counts, workers, charts, pause/resume/requeue/empty."""

    class Media:
        css = CSS

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return may_see_all_jobs(request.user)

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
