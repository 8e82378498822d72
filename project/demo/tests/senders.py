"""Senders and mail backends the demo's tests plug in through settings, as a site would plug in its own."""

from __future__ import annotations

import smtplib
from typing import Any

from django.core.mail.backends.locmem import EmailBackend

from project.demo.senders import DeliveryError, OutboxSender, OutgoingMessage

# How many more messages the flaky sender and backend let through before their connection "drops" (per test).
drop_after: list[int] = []


class FlakySender(OutboxSender):
    """Bounces recipients whose address contains "bounce"; drops the connection once when ``drop_after`` says so."""

    def send(self, message: OutgoingMessage) -> bool:
        if "bounce" in message.recipient:
            raise DeliveryError("mailbox does not exist")
        _maybe_drop()
        return super().send(message)


class FlakyBackend(EmailBackend):
    """Django's in-memory backend that refuses "refused" recipients and drops once like FlakySender."""

    def send_messages(self, messages: Any) -> int:
        for message in messages:
            if any("refused" in address for address in message.recipients()):
                raise smtplib.SMTPRecipientsRefused({message.to[0]: (550, b"no such user")})
        _maybe_drop()
        return super().send_messages(messages)


class WrongPasswordBackend(EmailBackend):
    def open(self) -> bool:
        raise smtplib.SMTPAuthenticationError(535, b"authentication failed")


def _maybe_drop() -> None:
    if drop_after:
        if drop_after[0] == 0:
            drop_after.clear()
            raise smtplib.SMTPServerDisconnected("connection unexpectedly closed")
        drop_after[0] -= 1
