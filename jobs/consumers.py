"""Websocket consumers: one job (``ws/jobs/<id>/``), all of my jobs (``ws/jobs/``), the staff dashboard.

They are authorised like the REST views: the session cookie (AuthMiddlewareStack) or an ``Authorization: Token``
header on the handshake. A refused client is accepted first and then closed with a code it can act on (4401
anonymous, 4403 not allowed, 4404 unknown or not yours, 4429 too many sockets); closing before accepting would
reach a browser as a bare HTTP 403 without the code.

An open socket is checked again every JOBS["SOCKET_RECHECK_INTERVAL"] seconds, its session or token read afresh:
4401 once the user logged out (or the token was deleted, the user deactivated), 4403/4404 once the permission or
the job's visibility is gone. Each user has at most JOBS["MAX_SOCKETS_PER_USER"] open, counted in Redis
(jobs.transport.sockets) so that the cap holds across ASGI processes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user as session_user
from django.contrib.auth.models import AnonymousUser
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from . import registry
from .access import may_see_all_jobs
from .conf import jobs_settings
from .job_json import JobJSON, job_json
from .transport import sockets
from .transport.connections import TransportError

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY = 4429
# A socket's entry in the per-user count outlives this many missed rechecks (a killed server's sockets expire).
SOCKET_TTL_RECHECKS = 3


class JobsConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Shared parts: authentication, group membership, relaying frames from the workers."""

    groups_joined: list[str]
    counted: bool = False
    rechecker: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.groups_joined = []
        await self.accept()
        self.user = await database_sync_to_async(authenticate)(self.scope)
        if not self.user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await self.count_in():
            await self.close(code=CLOSE_TOO_MANY)
            return
        if await self.start():
            self.rechecker = asyncio.ensure_future(self.recheck_forever())

    async def start(self) -> bool:
        """Join the socket's groups and send what it sends first; False when it closed the socket instead."""
        raise NotImplementedError

    def still_allowed(self, user: Any) -> int | None:
        """Run in a thread at every recheck, with the user read afresh: the close code once ``user`` may no longer
        listen here, else None. Subclasses add their permission or visibility check."""
        return None

    async def count_in(self) -> bool:
        settings_ = jobs_settings()
        ttl = settings_.SOCKET_RECHECK_INTERVAL * SOCKET_TTL_RECHECKS
        try:
            self.counted = await sync_to_async(sockets.acquire_socket)(
                self.user.pk, self.channel_name, limit=settings_.MAX_SOCKETS_PER_USER, ttl=ttl
            )
        except TransportError:
            # Redis is also the channel layer: without it no frame arrives anyway. Let the socket open uncounted.
            logger.warning("Could not count websocket of user %s", self.user.pk, exc_info=True)
            return True
        return self.counted

    async def recheck_forever(self) -> None:
        """Read the session or token and the permission again every SOCKET_RECHECK_INTERVAL; close when gone."""
        while True:
            interval = jobs_settings().SOCKET_RECHECK_INTERVAL
            await asyncio.sleep(interval)
            code = await database_sync_to_async(self.recheck)()
            if code is not None:
                await self.close(code=code)
                return
            if self.counted:
                try:
                    await sync_to_async(sockets.renew_socket)(
                        self.user.pk, self.channel_name, ttl=interval * SOCKET_TTL_RECHECKS
                    )
                except TransportError:
                    logger.warning("Could not renew websocket of user %s", self.user.pk, exc_info=True)

    def recheck(self) -> int | None:
        user = reauthenticate(self.scope, self.user)
        if user is None:
            return CLOSE_UNAUTHENTICATED
        return self.still_allowed(user)

    async def join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.append(group)

    async def disconnect(self, code: int) -> None:
        if self.rechecker is not None:
            self.rechecker.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        if self.counted:
            self.counted = False
            try:
                await sync_to_async(sockets.release_socket)(self.user.pk, self.channel_name)
            except TransportError:  # the entry expires on its own
                logger.warning("Could not release websocket of user %s", self.user.pk, exc_info=True)

    async def job_frame(self, event: dict[str, Any]) -> None:
        """A frame published by a worker or a web process (jobs.live.publish), already JSON text."""
        await self.send(text_data=event["text"])

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        # Results and progress data may hold datetimes or decimals, as the REST views allow.
        return json.dumps(content, cls=DjangoJSONEncoder)


class JobConsumer(JobsConsumer):
    """``ws/jobs/<id>/``: a snapshot of the job, then its progress and status frames as they happen."""

    async def start(self) -> bool:
        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        snapshot = await database_sync_to_async(job_snapshot)(self.user, job_id)
        if snapshot is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return False
        # Join before reading the snapshot's successor frames: a change in between arrives as a frame, and a
        # frame older than the snapshot is harmless (the client keeps the newest state).
        await self.join(f"job.{snapshot['id']}")
        await self.send_json({"type": "snapshot", "job": await database_sync_to_async(job_snapshot)(self.user, job_id)})
        return True

    def still_allowed(self, user: Any) -> int | None:
        from .models import JobLog

        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        return None if JobLog.objects.visible_to(user).filter(pk=job_id).exists() else CLOSE_NOT_FOUND


class UserJobsConsumer(JobsConsumer):
    """``ws/jobs/``: progress and status frames of every job the connected user owns."""

    async def start(self) -> bool:
        await self.join(f"user.{self.user.pk}")
        return True


class DashboardConsumer(JobsConsumer):
    """``ws/dashboard/``: jobs.view_joblog (or change). Queue counts on connect and when they change, and every
    job's frames."""

    refresher: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        # The permission alone decides, as on the REST API: is_staff neither grants nor is required.
        if not await database_sync_to_async(may_see_all_jobs)(self.user):
            await self.close(code=CLOSE_FORBIDDEN)
            return False
        await self.join("dashboard")
        self.refresher = asyncio.ensure_future(self.send_queue_counts())
        return True

    def still_allowed(self, user: Any) -> int | None:
        return None if may_see_all_jobs(user) else CLOSE_FORBIDDEN

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
    if key := token_of(scope):
        from rest_framework.authtoken.models import Token

        token = Token.objects.select_related("user").filter(key=key).first()
        if token is not None and token.user.is_active:
            return token.user
    return AnonymousUser()


def reauthenticate(scope: dict[str, Any], user: Any) -> Any:
    """``user`` read afresh (permissions included) if the session or token the socket opened with still signs them
    in; None once it does not (logged out, session expired or flushed, password changed, token deleted, user
    deactivated)."""
    session = scope.get("session")
    key = getattr(session, "session_key", None)
    if key:
        # A fresh store: the scope's one was read at the handshake and would not notice a logout.
        store = import_module(settings.SESSION_ENGINE).SessionStore(key)
        fresh = session_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
        if fresh.is_authenticated and fresh.pk == user.pk:
            return fresh
    token = token_of(scope)
    if token:
        from rest_framework.authtoken.models import Token

        found = Token.objects.select_related("user").filter(key=token, user_id=user.pk).first()
        if found is not None and found.user.is_active:
            return found.user
    return None


def token_of(scope: dict[str, Any]) -> str:
    header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
    keyword, _, key = header.partition(" ")
    return key.strip() if keyword == "Token" else ""


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
    return job_json(job, user, sensitive=registry.sensitive_keys(job.job_type))


def queue_stats() -> list[dict[str, Any]]:
    from .monitoring import list_queue_stats

    # Through JSON and back, so that "changed?" compares what the client would see.
    stats: list[dict[str, Any]] = json.loads(json.dumps(list_queue_stats(), cls=DjangoJSONEncoder))
    return stats
