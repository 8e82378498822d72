"""HTML pieces of the jobs admin: status badges, progress bars, pretty JSON, durations, compact times, timelines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.formats import number_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _

from ..models import TERMINAL_STATUSES, JobEvent, JobLog, JobStatus

CSS = {"all": ["jobs/admin/jobs.css"]}


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


def live_duration(job: JobLog) -> SafeString | str:
    """How long the job ran, or has run so far: while it runs, live.js counts on from the seconds it had run when
    the page was made (the server's clock alone, so a browser's clock that is off does not matter)."""
    if job.started_at is None:
        return "—"
    seconds = max(0.0, ((job.finished_at or timezone.now()) - job.started_at).total_seconds())
    if job.status != JobStatus.RUNNING or job.finished_at is not None:
        return format_duration(seconds)
    return format_html(
        '<span data-job-duration="{}" data-elapsed="{}">{}</span>', job.pk, f"{seconds:.3f}", format_duration(seconds)
    )


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


def live_progress(job: JobLog, poll_url: str) -> SafeString:
    """A job's bar and progress text; live.js keeps them current from ``ws/jobs/<id>/``, or else from ``poll_url``."""
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
        poll_url,
        progress_bar(job),
        job.progress_message,
        f"[{job.progress_stage}]" if job.progress_stage else "",
        detail,
    )


def failed_items_table(job: JobLog) -> SafeString:
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


def event_timeline(events: Sequence[JobEvent], users: dict[Any, str], *, more: bool) -> SafeString:
    """A job's events as a table; ``users`` names the users events refer to by id, ``more`` notes events left out."""
    rows = format_html_join("", "{}", ((event_row(e, users),) for e in events))
    note = format_html('<p class="jobs-quiet">{}</p>', _("Later events not shown.")) if more else ""
    return format_html(
        '<table class="jobs-table jobs-timeline"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th>'
        "<th>{}</th></tr></thead><tbody>{}</tbody></table>{}",
        _("when"),
        _("event"),
        _("status"),
        _("attempt"),
        _("details"),
        rows,
        note,
    )


def event_row(event: JobEvent, users: dict[Any, str]) -> SafeString:
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
