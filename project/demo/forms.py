"""The start forms of the demo's job types: what each form shows, and how its POST becomes a job payload.

The payload serializer of each job type is the only validator: a form turns the POST into a payload, ``submit()``
validates it, and the serializer's field errors are shown next to the inputs they belong to.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest

from jobs.exceptions import InvalidPayload

from . import job_types, sitegen, uploads

LIST_SEPARATORS = re.compile(r"[\s,;]+")

PayloadBuilder = Callable[[HttpRequest, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    input_type: str = "text"  # text, number, email, color, textarea, select, checkbox, file, contacts
    initial: Any = ""
    attrs: dict[str, str] = field(default_factory=dict)
    choices: tuple[tuple[str, str], ...] = ()
    help: str = ""


@dataclass(frozen=True)
class DemoForm:
    job_type: str
    title: str
    description: str
    fields: tuple[Field, ...]
    multipart: bool = False
    # Payload field -> form input, where the names differ (e.g. the stored file's path -> the upload input).
    error_inputs: dict[str, str] = field(default_factory=dict)

    def stored_files(self, payload: dict[str, Any]) -> list[str]:
        """The paths of the files this form's uploads were stored as, in the payload built from them."""
        file_inputs = {f.name for f in self.fields if f.input_type == "file"}
        return [
            payload[name]
            for name, input_name in self.error_inputs.items()
            if input_name in file_inputs and isinstance(payload.get(name), str)
        ]

    def values(self, request: HttpRequest) -> dict[str, Any]:
        """What the user entered, per input (files aside), to build the payload and to show the form again."""
        values: dict[str, Any] = {}
        for f in self.fields:
            if f.input_type == "checkbox":
                values[f.name] = f.name in request.POST
            elif f.input_type == "contacts":
                values[f.name] = request.POST.getlist(f.name)
            elif f.input_type != "file":
                values[f.name] = request.POST.get(f.name, "").strip()
        return values


def split_list(text: str) -> list[str]:
    return [item for item in LIST_SEPARATORS.split(text) if item]


def _plain(request: HttpRequest, values: dict[str, Any]) -> dict[str, Any]:
    return dict(values)


def _deploy(request: HttpRequest, values: dict[str, Any]) -> dict[str, Any]:
    pages = [title.strip() for title in values["pages"].split(",") if title.strip()]
    return {**values, "pages": pages}


def _contact_import(request: HttpRequest, values: dict[str, Any]) -> dict[str, Any]:
    return {**values, "file": uploads.store_contact_csv(request.FILES.get("upload"), "upload", request.user.pk)}


def _bulk_message(request: HttpRequest, values: dict[str, Any]) -> dict[str, Any]:
    payload = {**values, "contact_ids": [pk for pk in values["contact_ids"] if pk]}
    if not payload["messages_per_second"]:
        del payload["messages_per_second"]  # the job type's default pace
    if payload["all_contacts"]:
        del payload["contact_ids"]
    return payload


def _email_notification(request: HttpRequest, values: dict[str, Any]) -> dict[str, Any]:
    payload = {**values, "recipients": split_list(values["recipients"])}
    # Who may be written to depends on the user, which the payload's validation does not know: checked here (and
    # again by the job) once the addresses themselves are valid; invalid ones get the serializer's errors.
    valid = job_types.EmailNotificationPayload(data=payload)
    if valid.is_valid():
        refused = job_types.refused_recipients(request.user.pk, valid.validated_data["recipients"])
        if refused:
            raise InvalidPayload({"recipients": [job_types.refusal_message(refused)]})
    return payload


FORMS = (
    DemoForm(
        "deploy",
        "Deploy a static site",
        "Renders a site from a theme into your own folder (manifest, pages, stylesheet, sitemap), then runs its "
        "deploy script, which verifies every file and switches the site live. At most 3 deploys run at once and "
        "10 start per minute; a site with a custom domain goes first (high priority).",
        (
            Field("project", "Project", initial="my-site", help="Letters, digits and dashes: the site's folder."),
            Field("title", "Site title", initial="Acme Rockets"),
            Field("tagline", "Tagline", initial="Rockets that come back"),
            Field("theme", "Theme", "select", "landing", choices=tuple(sitegen.THEME_CHOICES)),
            Field("pages", "Pages", initial="About, Pricing, Contact", help="Comma-separated page titles."),
            Field("accent_color", "Accent colour", "color", "#0969da"),
            Field("custom_domain", "Custom domain (optional)", initial="", attrs={"placeholder": "www.example.com"}),
            Field("run_deploy_script", "Run the deploy script", "checkbox", True),
        ),
    ),
    DemoForm(
        "ai-generation",
        "AI text generation",
        "Streams a text in sections from an OpenAI-compatible chat-completions API; progress moves with each "
        "section received. 429, 5xx and timeouts are retried with backoff; other refusals fail at once. "
        "At most 20 start per minute.",
        (
            Field(
                "prompt",
                "Prompt",
                "textarea",
                "Write a short guide to background jobs in Django",
                attrs={"rows": "3"},
                help="Add [simulate 429] or [simulate 500] to see the local model refuse twice and the job retry, "
                "[simulate 400] to see it give up at once.",
            ),
            Field("sections", "Sections", "number", "4", {"min": "1", "max": "8"}),
            Field("temperature", "Temperature", "number", "0.7", {"min": "0", "max": "2", "step": "0.1"}),
        ),
    ),
    DemoForm(
        "contact-import",
        "Import contacts from CSV",
        "Upload a CSV with name, email and phone columns. Rows are validated (email; phone with 10 to 15 digits, "
        "optionally +country), de-duplicated and inserted in batches of 100; bad rows are listed one by one.",
        (
            Field("upload", "CSV file", "file", attrs={"accept": ".csv,text/csv"}),
            Field("skip_duplicates", "Skip duplicates (instead of reporting them as failed rows)", "checkbox", True),
            Field("update_existing", "Update contacts that already exist", "checkbox", False),
        ),
        multipart=True,
        error_inputs={"file": "upload"},
    ),
    DemoForm(
        "bulk-message",
        "Bulk message",
        "Sends a message with {{name}}-style variables to up to 2,000 of your contacts at a steady 12 per second "
        "(10 to 100 if you choose): email contacts through the mail backend, the others into the outbox. Each "
        "message that fails is listed.",
        (
            Field("subject", "Subject", initial="News for {{first_name}}"),
            Field(
                "template",
                "Message",
                "textarea",
                "Hello {{name}}, our rockets now come back. Reply to this message to book a launch.",
                attrs={"rows": "3"},
                help="Variables: {{name}}, {{first_name}}, {{email}}, {{phone}}.",
            ),
            Field("all_contacts", "Send to all my contacts", "checkbox", True),
            Field("contact_ids", "…or to these contacts", "contacts", []),
            Field(
                "messages_per_second",
                "Messages per second",
                "number",
                "",
                {"min": f"{job_types.MIN_MESSAGES_PER_SECOND:g}", "max": "100", "step": "0.1", "placeholder": "12"},
            ),
        ),
    ),
    DemoForm(
        "email-notification",
        "Email notification",
        "Sends one email per recipient through Django's EMAIL_BACKEND (this demo writes them to var/mail/), over "
        "one connection per batch. At most 10 notifications start per second.",
        (
            Field(
                "recipients",
                "Recipients",
                "textarea",
                "ada@example.com, grace@example.com, linus@example.com",
                attrs={"rows": "3"},
                help="Your contacts' addresses or your own (staff: any), separated by commas, spaces or new lines.",
            ),
            Field("subject", "Subject", initial="Your launch is confirmed"),
            Field("body", "Message", "textarea", "Your rocket leaves on Friday at 9:00.", attrs={"rows": "3"}),
            Field("batch_size", "Batch size", "number", "20", {"min": "1", "max": "100"}),
        ),
    ),
    DemoForm(
        "report",
        "CSV report",
        "Computes number facts (squares, primes, Collatz steps) and writes them to a CSV file you can download.",
        (
            Field("title", "Title", initial="Number facts"),
            Field("rows", "Rows", "number", "20000", {"min": "1", "max": "100000"}),
        ),
    ),
)
FORMS_BY_TYPE = {form.job_type: form for form in FORMS}
PAYLOAD_BUILDERS: dict[str, PayloadBuilder] = {
    "deploy": _deploy,
    "contact-import": _contact_import,
    "bulk-message": _bulk_message,
    "email-notification": _email_notification,
}


def build_payload(form: DemoForm, request: HttpRequest, values: dict[str, Any]) -> dict[str, Any]:
    return PAYLOAD_BUILDERS.get(form.job_type, _plain)(request, values)


def field_errors(form: DemoForm, errors: Any, payload: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Serializer errors as {input name: [message, ...]}; errors of list items name the item."""
    if not isinstance(errors, dict):
        return {"non_field_errors": [str(errors)]}
    flat: dict[str, list[str]] = {}
    for name, texts in errors.items():
        target = form.error_inputs.get(str(name), str(name))
        flat.setdefault(target, []).extend(_messages(texts, (payload or {}).get(str(name))))
    return flat


def _messages(texts: Any, value: Any) -> list[str]:
    if isinstance(texts, dict):
        # A ListField's item errors: {index: [messages]}.
        items = value if isinstance(value, list) else []
        out: list[str] = []
        for index, item_texts in texts.items():
            position = int(index) if str(index).isdigit() else -1
            shown = f" ({items[position]})" if 0 <= position < len(items) else ""
            out.extend(f"Item {position + 1}{shown}: {text}" for text in _messages(item_texts, None))
        return out
    if isinstance(texts, list | tuple):
        return [str(text) for text in texts]
    return [str(texts)]
