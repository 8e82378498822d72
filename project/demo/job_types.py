"""The demo's job types: small, but each does real local work (files, HTTP, email, SQL).

The five that real sites move out of their requests (deploy, ai-generation, contact-import, bulk-message,
email-notification) plus report and csv-stats, which make and read a CSV file. The heavy lifting lives in
sitegen.py, llm.py, contacts.py and senders.py; this module declares each type's payload and limits, and reports
progress.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import smtplib
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError
from django.urls import reverse
from rest_framework import serializers

from jobs import PermanentError, job_type
from jobs.types import Priority

from . import contacts, files, llm, sitegen
from .mail import job_connection
from .models import Contact
from .senders import DeliveryError, MessageSender, OutgoingMessage, deliver, get_sender

REPORT_COLUMNS = ["n", "square", "sqrt", "is_prime", "collatz_steps", "digit_sum"]
CHUNK = 1000  # rows between progress reports and cancellation checks


def reports_dir() -> Path:
    return Path(settings.MEDIA_ROOT) / "reports"


def uploads_dir() -> Path:
    return Path(settings.MEDIA_ROOT) / "uploads"


class ReportPayload(serializers.Serializer[Any]):
    rows = serializers.IntegerField(min_value=1, max_value=100_000)
    title = serializers.CharField(max_length=100)


@job_type("report", payload=ReportPayload, max_attempts=2, timeout=600)
def report(ctx: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Compute a table of number facts and write it as a CSV file."""
    total = payload["rows"]
    rows: list[list[Any]] = []
    for start in range(1, total + 1, CHUNK):
        if ctx.is_canceled():
            return None
        rows.extend(_number_row(n) for n in range(start, min(start + CHUNK, total + 1)))
        ctx.progress(
            80 * len(rows) // total,
            f"Computed {len(rows)} of {total} rows",
            stage="generate",
            current=len(rows),
            total=total,
        )

    path = reports_dir() / f"{ctx.job_id}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".csv.part")
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"# {payload['title']}"])
        writer.writerow(REPORT_COLUMNS)
        for start in range(0, total, CHUNK):
            if ctx.is_canceled():
                handle.close()
                partial.unlink(missing_ok=True)
                return None
            writer.writerows(rows[start : start + CHUNK])
            done = min(start + CHUNK, total)
            ctx.progress(
                80 + 20 * done // total, f"Wrote {done} of {total} rows", stage="write", current=done, total=total
            )
    # A reader never sees half a report: the file appears complete or not at all.
    os.replace(partial, path)
    relative = str(path.relative_to(settings.MEDIA_ROOT))
    files.record(relative, owner_id=ctx.owner_id, job_id=ctx.job_id)  # csv-stats may read it for its owner only
    return {"path": relative, "rows": total, "bytes": path.stat().st_size}


def _number_row(n: int) -> list[Any]:
    return [n, n * n, round(math.sqrt(n), 6), int(_is_prime(n)), _collatz_steps(n), sum(map(int, str(n)))]


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


def _collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


class CsvStatsPayload(serializers.Serializer[Any]):
    # A file the demo itself put under MEDIA_ROOT (an upload or a report), never a path from outside.
    file = serializers.RegexField(r"^(uploads|reports)/[0-9a-f-]{36}\.csv$", max_length=100)


class CountingLines:
    """Iterates a text file's lines and counts the characters read, for progress (tell() is off while iterating)."""

    def __init__(self, handle: Iterator[str]) -> None:
        self.handle = handle
        self.chars = 0

    def __iter__(self) -> Iterator[str]:
        for line in self.handle:
            self.chars += len(line)
            yield line


# A file that is missing or is not CSV fails the same way every time: no point in retrying it.
@job_type("csv-stats", payload=CsvStatsPayload, timeout=300, give_up_on=(FileNotFoundError, csv.Error))
def csv_stats(ctx: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Read a CSV file and summarise each column; malformed rows become per-item failures."""
    files.check_readable(payload["file"], ctx.owner_id, "csv-stats")
    path = Path(settings.MEDIA_ROOT) / payload["file"]
    size = path.stat().st_size or 1
    columns: dict[str, list[float]] = {}
    texts: dict[str, set[str]] = {}
    header: list[str] | None = None
    rows = 0
    with path.open(newline="", errors="replace") as handle:
        lines = CountingLines(handle)
        for line_number, record in enumerate(csv.reader(lines), start=1):
            if not record or record[0].startswith("#"):
                continue
            if header is None:
                header = [name.strip() or f"column {i + 1}" for i, name in enumerate(record)]
                columns = {name: [] for name in header}
                texts = {name: set() for name in header}
                continue
            if len(record) != len(header):
                ctx.item_failed(f"line {line_number}", f"expected {len(header)} fields, found {len(record)}")
                continue
            rows += 1
            for name, value in zip(header, record, strict=True):
                try:
                    columns[name].append(float(value))
                except ValueError:
                    if len(texts[name]) <= 1000:
                        texts[name].add(value)
            if rows % CHUNK == 0:
                if ctx.is_canceled():
                    return None
                ctx.progress(min(95, 95 * lines.chars // size), f"Read {rows} rows", stage="read", current=rows)
    if header is None:
        raise PermanentError("The file has no header row.")
    ctx.progress(97, "Summarising", stage="summarise", current=rows)
    summary: dict[str, Any] = {}
    for name in header:
        numbers = columns[name]
        if numbers and not texts[name]:
            summary[name] = {
                "kind": "number",
                "min": min(numbers),
                "max": max(numbers),
                "mean": round(statistics.fmean(numbers), 4),
                "sum": round(math.fsum(numbers), 4),
            }
        else:
            distinct = texts[name] | {str(v) for v in numbers[:1000]}
            summary[name] = {"kind": "text", "distinct": len(distinct) if len(distinct) <= 1000 else "1000+"}
    return {"file": payload["file"], "rows": rows, "columns": summary}


# --- deploy --------------------------------------------------------------------------------------------------------

HOSTNAME = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", re.IGNORECASE)
RESERVED_PAGES = {"index", "404", "style", "sitemap", "robots", "manifest", "deploy"}


class DeployPayload(serializers.Serializer[Any]):
    project = serializers.SlugField(max_length=40, help_text="Folder name of the site, e.g. my-site.")
    title = serializers.CharField(max_length=100)
    tagline = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    theme = serializers.ChoiceField(choices=sitegen.THEME_CHOICES, default="minimal")
    pages = serializers.ListField(
        child=serializers.CharField(max_length=40), max_length=12, required=False, default=["About", "Contact"]
    )
    accent_color = serializers.RegexField(
        r"^#[0-9a-fA-F]{6}$", default="#0969da", error_messages={"invalid": "Use a colour like #0969da."}
    )
    custom_domain = serializers.RegexField(
        HOSTNAME,
        required=False,
        allow_blank=True,
        default="",
        error_messages={"invalid": "Enter a domain name like www.example.com."},
    )
    run_deploy_script = serializers.BooleanField(default=True, help_text="Verify the files and switch the site live.")

    def validate_custom_domain(self, value: str) -> str:
        return value.lower()

    def validate_pages(self, value: list[str]) -> list[str]:
        slugs: dict[str, str] = {}
        for title in value:
            slug = sitegen.page_slug(title)
            if not slug:
                raise serializers.ValidationError(f"{title!r} has no letters or digits to name its file.")
            if slug in RESERVED_PAGES:
                raise serializers.ValidationError(f"{title!r} would overwrite the site's {slug} file.")
            if slug in slugs:
                raise serializers.ValidationError(f"{title!r} and {slugs[slug]!r} would be the same page.")
            slugs[slug] = title
        return value


def deploy_priority(payload: dict[str, Any]) -> Priority:
    """A site with its own domain is a customer's production site: it goes ahead of the queue."""
    return "high" if payload.get("custom_domain") else "normal"


@job_type(
    "deploy",
    payload=DeployPayload,
    max_attempts=3,
    timeout=600,
    rate_limit="10/m",
    concurrency=3,
    # Full disks and a failing deploy script may pass; a template that does not render will not.
    retry_on=(OSError, sitegen.DeployScriptFailed),
)
def deploy(ctx: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Render a static site from a theme into a per-user release folder, then switch it live with its deploy script."""
    started = time.monotonic()
    release = ctx.job_id
    folder = sitegen.release_dir(ctx.owner_id, payload["project"], release)
    ctx.progress(2, "Preparing the release folder", stage="init")
    sitegen.prepare(folder)

    ctx.progress(5, "Generating file manifest", stage="manifest")
    files = sitegen.render_site(payload, release)
    manifest = sitegen.SiteFile("manifest.json", sitegen.manifest_bytes(payload, release, files))
    sitegen.write_file(folder, manifest)
    ctx.progress(15, f"Manifest lists {len(files)} files", stage="manifest", current=0, total=len(files))

    delay = float(getattr(settings, "DEMO_DEPLOY_FILE_DELAY", 0))
    for number, site_file in enumerate(files, start=1):
        if ctx.is_canceled():
            shutil.rmtree(folder, ignore_errors=True)
            return None
        sitegen.write_file(folder, site_file)
        if delay:
            time.sleep(delay)  # stands in for uploading the file to a real host
        ctx.progress(
            15 + 75 * number // len(files),
            f"Wrote {site_file.path}",
            stage="files",
            current=number,
            total=len(files),
        )

    output = ""
    if payload["run_deploy_script"]:
        ctx.progress(92, "Running deploy.py", stage="deploy")
        output = sitegen.run_deploy_script(folder)
    ctx.progress(100, "Deployed" if output else "Files written", stage="done")
    return {
        "folderPath": str(folder.relative_to(settings.MEDIA_ROOT)),
        "fileCount": len(files) + 1,  # and manifest.json
        "deployTime": round(time.monotonic() - started, 3),  # seconds
        "bytes": sum(len(f.content) for f in files) + len(manifest.content),
        "theme": payload["theme"],
        "domain": payload["custom_domain"] or None,
        "live": bool(output),
        "deployOutput": output,
        "url": reverse("deployed-site", kwargs={"job_id": ctx.job_id, "path": "index.html"}),
    }


# --- ai-generation -------------------------------------------------------------------------------------------------

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


# --- contact-import ------------------------------------------------------------------------------------------------


class ContactImportPayload(serializers.Serializer[Any]):
    # A file the demo stored under MEDIA_ROOT from an upload; the file itself never travels in the payload.
    file = serializers.RegexField(
        r"^uploads/[0-9a-f-]{36}\.csv$", max_length=100, error_messages={"invalid": "Not an uploaded CSV file."}
    )
    update_existing = serializers.BooleanField(default=False, help_text="Rows matching a contact update it.")
    skip_duplicates = serializers.BooleanField(default=True, help_text="Duplicates are skipped, not failed rows.")

    def validate_file(self, value: str) -> str:
        if not (uploads_dir().parent / value).is_file():
            raise serializers.ValidationError("No uploaded file with this name.")
        return value


@job_type(
    "contact-import",
    payload=ContactImportPayload,
    max_attempts=3,
    timeout=1800,
    concurrency=2,
    # A busy or restarting database is worth another attempt; a bad file is not (PermanentError).
    retry_on=(OperationalError,),
)
def contact_import(ctx: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Import contacts from an uploaded CSV file in batches of 100; rows that fail are reported one by one."""
    if ctx.owner_id is None:
        raise PermanentError("contact-import needs a user to own the contacts.")
    files.check_readable(payload["file"], ctx.owner_id, "contact-import")
    ctx.progress(1, "Reading the file", stage="read")
    source = contacts.CsvFile.open(uploads_dir().parent / payload["file"])
    total = source.count()
    importer = contacts.ContactImporter(
        owner_id=ctx.owner_id,
        job_id=ctx.job_id,
        update_existing=payload["update_existing"],
        skip_duplicates=payload["skip_duplicates"],
        item_failed=ctx.item_failed,
    )
    ctx.progress(3, f"Importing {total} rows", stage="import", current=0, total=total)
    batch: list[tuple[int, dict[str, str]]] = []
    for record in source.records():
        batch.append(record)
        if len(batch) == contacts.BATCH_SIZE:
            if ctx.is_canceled():
                return {**importer.counts.as_dict(), "total": total, "canceled": True}
            _import_batch(ctx, importer, batch, total)
            batch = []
    if batch:
        _import_batch(ctx, importer, batch, total)
    return {**importer.counts.as_dict(), "total": total}


def _import_batch(
    ctx: Any, importer: contacts.ContactImporter, batch: list[tuple[int, dict[str, str]]], total: int
) -> None:
    importer.import_batch(batch)
    counts = importer.counts
    ctx.progress(
        3 + 97 * counts.rows // max(total, 1),
        f"{counts.rows} of {total} rows: {counts.imported} new, {counts.updated} updated, "
        f"{counts.skipped} skipped, {counts.failed} failed",
        stage="import",
        data=counts.as_dict(),
        current=counts.rows,
        total=total,
    )


# --- bulk-message --------------------------------------------------------------------------------------------------

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")
VARIABLES = ("name", "first_name", "email", "phone")
SMS_MAX_CHARS = 480  # three SMS parts
# bulk-message runs one job at a time (concurrency 1): its largest job at its slowest pace holds that one slot for
# at most MAX_RECIPIENTS / MIN_MESSAGES_PER_SECOND = 200 seconds.
MAX_RECIPIENTS = 2000
MIN_MESSAGES_PER_SECOND = 10.0


def render_message(template: str, contact: Contact) -> str:
    """``template`` with each ``{{variable}}`` replaced; ValueError if the contact lacks a value it uses."""
    values = {
        "name": contact.name,
        "first_name": contact.name.split()[0] if contact.name.split() else "",
        "email": contact.email,
        "phone": contact.phone,
    }

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if not values[name]:
            raise ValueError(f"the contact has no {name} for {{{{{name}}}}}")
        return values[name]

    return VARIABLE.sub(value, template)


class BulkMessagePayload(serializers.Serializer[Any]):
    template = serializers.CharField(max_length=2000, help_text="Variables: {{name}}, {{first_name}}, {{email}}, …")
    subject = serializers.CharField(max_length=200, default="A message from the jobs demo")
    contact_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), max_length=MAX_RECIPIENTS, required=False, default=list
    )
    all_contacts = serializers.BooleanField(default=False, help_text=f"At most {MAX_RECIPIENTS} contacts.")
    messages_per_second = serializers.FloatField(
        min_value=MIN_MESSAGES_PER_SECOND,
        max_value=100,
        required=False,
        help_text="Default: DEMO_MESSAGES_PER_SECOND (12).",
    )

    def validate_template(self, value: str) -> str:
        return _check_variables(value)

    def validate_subject(self, value: str) -> str:
        return _check_variables(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("contact_ids") and not attrs.get("all_contacts"):
            raise serializers.ValidationError({"contact_ids": ["Select at least one contact, or all of them."]})
        return attrs


def _check_variables(text: str) -> str:
    unknown = sorted({name for name in VARIABLE.findall(text) if name not in VARIABLES})
    if unknown:
        known = ", ".join("{{" + name + "}}" for name in VARIABLES)
        raise serializers.ValidationError(f"Unknown variable {{{{{unknown[0]}}}}}; use {known}.")
    return text


@job_type(
    "bulk-message",
    payload=BulkMessagePayload,
    max_attempts=3,
    timeout=3600,
    # One job at a time: the per-message pace inside the job is then the pace of the whole site.
    concurrency=1,
    # A mail server that is down or drops the connection is worth retrying; wrong credentials are not.
    retry_on=(smtplib.SMTPException, OSError, OperationalError),
    give_up_on=(smtplib.SMTPAuthenticationError,),
)
def bulk_message(ctx: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Send a templated message to contacts at a steady pace (12/s by default), tracking each message's outcome."""
    if ctx.owner_id is None:
        raise PermanentError("bulk-message needs a user whose contacts it messages.")
    configured = float(getattr(settings, "DEMO_MESSAGES_PER_SECOND", 12))
    rate = float(payload.get("messages_per_second") or configured)
    chosen = Contact.objects.filter(owner_id=ctx.owner_id).order_by("id")
    if not payload["all_contacts"]:
        wanted = list(dict.fromkeys(payload["contact_ids"]))
        chosen = chosen.filter(pk__in=wanted)
        found = set(chosen.values_list("pk", flat=True))
        for missing in (pk for pk in wanted if pk not in found):
            ctx.item_failed(f"contact {missing}", "no such contact")
    elif (count := chosen.count()) > MAX_RECIPIENTS:
        raise PermanentError(
            f"You have {count} contacts; one bulk-message job sends to at most {MAX_RECIPIENTS}: choose some."
        )
    recipients = list(chosen)
    total = len(recipients)
    counts = {"sent": 0, "alreadySent": 0, "failed": 0}
    started = time.monotonic()
    ctx.progress(0, f"Sending {total} messages at {rate:g}/s", stage="send", current=0, total=total)
    with get_sender(ctx.job_id) as sender:
        for number, contact in enumerate(recipients, start=1):
            if ctx.is_canceled():
                return {**counts, "total": total, "canceled": True}
            # Message n leaves no earlier than (n-1)/rate seconds after the first: a steady pace, no bursts.
            wait = started + (number - 1) / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            outcome = _send_one(ctx, sender, payload, contact)
            counts[outcome] += 1
            ctx.progress(
                100 * number // max(total, 1),
                f"{number} of {total}: {counts['sent']} sent, {counts['failed']} failed",
                stage="send",
                current=number,
                total=total,
            )
    elapsed = time.monotonic() - started
    return {**counts, "total": total, "messagesPerSecond": rate, "seconds": round(elapsed, 2)}


def _send_one(ctx: Any, sender: MessageSender, payload: dict[str, Any], contact: Contact) -> str:
    label = f"contact {contact.pk} ({contact.email or contact.phone})"
    try:
        body = render_message(payload["template"], contact)
        subject = render_message(payload["subject"], contact)
    except ValueError as exc:
        ctx.item_failed(label, exc)
        return "failed"
    channel: Literal["email", "sms"] = "email" if contact.email else "sms"
    if channel == "sms" and len(body) > SMS_MAX_CHARS:
        ctx.item_failed(label, f"{len(body)} characters is too long for an SMS (at most {SMS_MAX_CHARS})")
        return "failed"
    message = OutgoingMessage(
        job_id=ctx.job_id,
        channel=channel,
        recipient=contact.email or contact.phone,
        subject=subject,
        body=body,
        contact_id=contact.pk,
    )
    try:
        return "sent" if sender.send(message) else "alreadySent"
    except DeliveryError as exc:
        ctx.item_failed(label, exc)
        return "failed"


# --- email-notification --------------------------------------------------------------------------------------------


def refused_recipients(owner_id: int | None, recipients: list[str]) -> list[str]:
    """The addresses an email-notification of this owner may not write to.

    A visitor writes only to their own contacts and to themselves, so the demo cannot be used to mail strangers;
    staff, and jobs no user submitted (code, schedules), may write to anyone.
    """
    if owner_id is None or files.is_staff(owner_id):
        return []
    wanted = [address.lower() for address in recipients]
    known = set(Contact.objects.filter(owner_id=owner_id, email__in=wanted).values_list("email", flat=True))
    own = get_user_model().objects.filter(pk=owner_id).values_list("email", flat=True).first()
    if own:
        known.add(own.lower())
    return [address for address in recipients if address.lower() not in known]


def refusal_message(refused: list[str]) -> str:
    shown = ", ".join(refused[:3]) + (f" and {len(refused) - 3} more" if len(refused) > 3 else "")
    verb = "is" if len(refused) == 1 else "are"
    return f"{shown} {verb} not among your contacts: you may notify only your contacts and yourself."


class EmailNotificationPayload(serializers.Serializer[Any]):
    recipients = serializers.ListField(
        child=serializers.EmailField(),
        allow_empty=False,
        max_length=1000,
        error_messages={"empty": "Give at least one recipient."},
    )
    subject = serializers.CharField(max_length=200)
    body = serializers.CharField(max_length=10_000)
    batch_size = serializers.IntegerField(min_value=1, max_value=100, default=20)

    def validate_recipients(self, value: list[str]) -> list[str]:
        return list(dict.fromkeys(address.lower() for address in value))


@job_type(
    "email-notification",
    payload=EmailNotificationPayload,
    max_attempts=5,
    timeout=600,
    rate_limit="10/s",
    # A mail server that is down or drops the connection is worth retrying; wrong credentials are not.
    retry_on=(smtplib.SMTPException, OSError, OperationalError),
    give_up_on=(smtplib.SMTPAuthenticationError,),
)
def email_notification(ctx: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Email a notification to each recipient through EMAIL_BACKEND, one connection per batch."""
    recipients = payload["recipients"]
    if refused := refused_recipients(ctx.owner_id, recipients):
        raise PermanentError(refusal_message(refused))
    size = payload["batch_size"]
    batches = [recipients[i : i + size] for i in range(0, len(recipients), size)]
    counts = {"sent": 0, "alreadySent": 0, "failed": 0}
    ctx.progress(0, f"Sending to {len(recipients)} recipients", stage="send", current=0, total=len(recipients))
    for number, batch in enumerate(batches, start=1):
        if ctx.is_canceled():
            return {**counts, "recipients": len(recipients), "canceled": True}
        # One connection per batch: an SMTP server sees one login per batch, not per message.
        with job_connection(ctx.job_id) as connection:
            for address in batch:
                message = OutgoingMessage(
                    job_id=ctx.job_id,
                    channel="email",
                    recipient=address,
                    subject=payload["subject"],
                    body=payload["body"],
                )
                try:
                    counts["sent" if deliver(connection, message) else "alreadySent"] += 1
                except DeliveryError as exc:
                    counts["failed"] += 1
                    ctx.item_failed(address, exc)
        done = min(number * size, len(recipients))
        ctx.progress(
            100 * done // len(recipients),
            f"Batch {number} of {len(batches)}: {done} of {len(recipients)} recipients",
            stage="send",
            current=done,
            total=len(recipients),
        )
    return {**counts, "recipients": len(recipients), "batches": len(batches)}
