from __future__ import annotations

import uuid

from django.db import models


class TaskLog(models.Model):
    """A task's row, as a team writes one next to django-rq: what ran, its status and times, and its error."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task = models.CharField(max_length=100)
    args = models.JSONField(default=list)
    status = models.CharField(max_length=20, default="queued", db_index=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"{self.task} {self.id} ({self.status})"
