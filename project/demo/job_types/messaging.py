"""bulk-message (SMS or email to many contacts, paced) and email-notification (one email to a few addresses)."""

from __future__ import annotations

import re
import smtplib
import time
from typing import Any, Literal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError
from rest_framework import serializers

from jobs import PermanentError, job_type

from .. import files
from ..mail import job_connection
from ..models import Contact
from ..senders import DeliveryError, MessageSender, OutgoingMessage, deliver, get_sender

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
