"""The demo's own data: the contacts that contact-import fills and the outbox that bulk-message writes to."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Contact(models.Model):
    """A person a user can message; unique per owner by email and by phone."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="demo_contacts")
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(max_length=254, blank=True)  # stored lowercased: one spelling per address
    phone = models.CharField(max_length=16, blank=True)  # digits, with a leading + when a country code was given
    # The contact-import job that created the row: a retried import recognises its own earlier inserts.
    source_job_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "email"], condition=~Q(email=""), name="demo_contact_unique_owner_email"
            ),
            models.UniqueConstraint(
                fields=["owner", "phone"], condition=~Q(phone=""), name="demo_contact_unique_owner_phone"
            ),
            models.CheckConstraint(condition=~Q(email="", phone=""), name="demo_contact_email_or_phone"),
        ]
        # The contacts page and the bulk-message form: one owner's contacts by name.
        indexes = [models.Index(fields=["owner", "name"], name="demo_contact_owner_name")]

    def __str__(self) -> str:
        return self.name or self.email or self.phone


class OutboxMessage(models.Model):
    """One message handed to a sender by bulk-message or email-notification; unique per job and recipient."""

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        SMS = "sms", "SMS"

    job_id = models.UUIDField()
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    recipient = models.CharField(max_length=254)
    subject = models.CharField(max_length=200, blank=True)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A retried job skips whoever an earlier attempt already reached: nobody gets a message twice.
            models.UniqueConstraint(fields=["job_id", "recipient"], name="demo_outbox_unique_job_recipient"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.recipient}"


class DemoFile(models.Model):
    """A file a demo job reads or wrote under MEDIA_ROOT (an upload, a report): who may read it, whose job it is.

    Jobs take file paths in their payloads; this row is what stops one user's job from reading another user's file,
    and what deletes the file with the job that owns it (files.py).
    """

    path = models.CharField(max_length=200, unique=True)  # relative to MEDIA_ROOT, e.g. uploads/<uuid>.csv
    # NULL: a file of a job no user submitted (code, a schedule); only staff and such jobs may read it.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="demo_files"
    )
    # The job the file was uploaded for or written by; deleting that job's row deletes the file.
    job_id = models.UUIDField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.path
