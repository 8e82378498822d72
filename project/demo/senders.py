"""How bulk-message delivers: a pluggable sender class, named by the DEMO_MESSAGE_SENDER setting.

A sender is opened once per job, sends each message, and is closed at the end. ``send()`` returns False for a
message an earlier attempt of the same job already delivered, raises ``DeliveryError`` when this one message cannot
be delivered (the job goes on with the others), and lets any other error through: a mail server that is down fails
the attempt, and the job is retried.

The default, ``OutboxSender``, records every message in ``OutboxMessage`` and sends the email ones through Django's
mail backend (EMAIL_BACKEND); messages to phone-only contacts stay in the outbox, where an SMS gateway would pick
them up. To deliver elsewhere, subclass ``MessageSender`` and set DEMO_MESSAGE_SENDER to its dotted path.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.utils.module_loading import import_string

from .mail import job_connection
from .models import OutboxMessage


class DeliveryError(Exception):
    """This one message could not be delivered."""


@dataclass(frozen=True)
class OutgoingMessage:
    job_id: str
    channel: Literal["email", "sms"]
    recipient: str
    subject: str
    body: str
    contact_id: int | None = None


class MessageSender:
    """Delivers the messages of one job. Use as a context manager: ``with get_sender(job_id) as sender: ...``."""

    job_id: str = ""  # the job whose messages it delivers; set by get_sender()

    def open(self) -> None:
        """Acquire what sending needs (a connection); called once before the first message."""

    def send(self, message: OutgoingMessage) -> bool:
        """Deliver one message: True if sent now, False if an earlier attempt already did; DeliveryError for it."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what open() acquired; called once, also after an error."""

    def __enter__(self) -> MessageSender:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def deliver(connection: Any, message: OutgoingMessage) -> bool:
    """Record ``message`` in the outbox and, for email, send it over the mail ``connection``; False if already recorded.

    The row and the sending share a transaction: a message the mail server did not take is not recorded, so a retry
    sends it again, and one it took is never sent twice by the same job.
    """
    with transaction.atomic():
        _row, created = OutboxMessage.objects.get_or_create(
            job_id=message.job_id,
            recipient=message.recipient,
            defaults={
                "channel": message.channel,
                "contact_id": message.contact_id,
                "subject": message.subject[:200],
                "body": message.body,
            },
        )
        if not created:
            return False
        if message.channel == "email":
            email = EmailMessage(message.subject, message.body, to=[message.recipient], connection=connection)
            try:
                email.send(fail_silently=False)
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                raise DeliveryError(f"the mail server refused it: {_smtp_reason(exc)}") from exc
    return True


def _smtp_reason(exc: smtplib.SMTPException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{code} {reason.decode(errors='replace')}" for code, reason in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        return f"{exc.smtp_code} {error}"
    return str(exc)


class OutboxSender(MessageSender):
    """The default: every message lands in OutboxMessage; email ones also go out through EMAIL_BACKEND."""

    connection: Any = None

    def open(self) -> None:
        # One connection for the whole job: an SMTP backend logs in once, not once per message.
        self.connection = job_connection(self.job_id)
        self.connection.open()

    def send(self, message: OutgoingMessage) -> bool:
        return deliver(self.connection, message)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def get_sender(job_id: str) -> MessageSender:
    """A new instance of the class DEMO_MESSAGE_SENDER names, for the messages of job ``job_id``."""
    sender_class = import_string(getattr(settings, "DEMO_MESSAGE_SENDER", "project.demo.senders.OutboxSender"))
    sender = sender_class()
    if not isinstance(sender, MessageSender):
        raise TypeError(f"DEMO_MESSAGE_SENDER must name a MessageSender subclass, not {sender_class!r}.")
    sender.job_id = job_id
    return sender
