"""Websocket consumers: one job (``ws/jobs/<id>/``), all of my jobs (``ws/jobs/``), the staff dashboard.

They are authorised like the REST views: the session cookie (AuthMiddlewareStack) or an ``Authorization: Token``
header on the handshake. A refused client is accepted first and then closed with a code it can act on (4401
anonymous, 4403 not allowed, 4404 unknown or not yours); closing before accepting would reach a browser as a bare
HTTP 403 without the code.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth.models import AnonymousUser
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from .access import may_see_all_jobs
from .conf import jobs_settings
from .job_json import JobJSON, job_json

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


class JobsConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Shared parts: authentication, group membership, relaying frames from the workers."""

    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        await self.accept()
        self.user = await database_sync_to_async(authenticate)(self.scope)
        if not self.user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.start()

    async def start(self) -> None:
        raise NotImplementedError

    async def join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.append(group)

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def job_frame(self, event: dict[str, Any]) -> None:
        """A frame published by a worker or a web process (jobs.live.publish), already JSON text."""
        await self.send(text_data=event["text"])

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        # Results and progress data may hold datetimes or decimals, as the REST views allow.
        return json.dumps(content, cls=DjangoJSONEncoder)


class JobConsumer(JobsConsumer):
    """``ws/jobs/<id>/``: a snapshot of the job, then its progress and status frames as they happen."""

    async def start(self) -> None:
        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        snapshot = await database_sync_to_async(job_snapshot)(self.user, job_id)
        if snapshot is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        # Join before reading the snapshot's successor frames: a change in between arrives as a frame, and a
        # frame older than the snapshot is harmless (the client keeps the newest state).
        await self.join(f"job.{snapshot['id']}")
        await self.send_json({"type": "snapshot", "job": await database_sync_to_async(job_snapshot)(self.user, job_id)})


class UserJobsConsumer(JobsConsumer):
    """``ws/jobs/``: progress and status frames of every job the connected user owns."""

    async def start(self) -> None:
        await self.join(f"user.{self.user.pk}")


class DashboardConsumer(JobsConsumer):
    """``ws/dashboard/``: jobs.view_joblog (or change). Queue counts on connect and when they change, and every
    job's frames."""

    refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # The permission alone decides, as on the REST API: is_staff neither grants nor is required.
        if not await database_sync_to_async(may_see_all_jobs)(self.user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.join("dashboard")
        self.refresher = asyncio.ensure_future(self.send_queue_counts())

    async def send_queue_counts(self) -> None:
        """Send the queue stats now and again whenever they change (checked every DASHBOARD_INTERVAL)."""
        last: list[dict[str, Any]] | None = None
        while True:
            queues = await database_sync_to_async(queue_stats)()
            if queues != last:
                await self.send_json({"type": "queues", "queues": queues, "at": timezone.now().isoformat()})
                last = queues
            await asyncio.sleep(jobs_settings().DASHBOARD_INTERVAL)

    async def disconnect(self, code: int) -> None:
        if self.refresher is not None:
            self.refresher.cancel()
        await super().disconnect(code)


def authenticate(scope: dict[str, Any]) -> Any:
    """The session's user, else the user of an ``Authorization: Token <key>`` handshake header."""
    user = scope.get("user")
    if user is not None and user.is_authenticated:
        return user
    header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
    keyword, _, key = header.partition(" ")
    if keyword == "Token" and key:
        from rest_framework.authtoken.models import Token

        token = Token.objects.select_related("user").filter(key=key.strip()).first()
        if token is not None and token.user.is_active:
            return token.user
    return AnonymousUser()


def job_snapshot(user: Any, job_id: str) -> JobJSON | None:
    """The job JSON of the REST API, or None when the job does not exist or is not the user's."""
    from .models import JobLog

    try:
        pk = uuid.UUID(job_id)
    except ValueError:
        return None
    job = JobLog.objects.visible_to(user).filter(pk=pk).first()
    if job is None:
        return None
    return job_json(job, user)


def queue_stats() -> list[dict[str, Any]]:
    from .monitoring import list_queue_stats

    # Through JSON and back, so that "changed?" compares what the client would see.
    stats: list[dict[str, Any]] = json.loads(json.dumps(list_queue_stats(), cls=DjangoJSONEncoder))
    return stats
