"""Live frames: what listeners of a job hear, sent to the channel layer groups job.<id>, user.<id> and dashboard.

Frames leave through one background thread per process (``publish``): a progress call only appends to a list, and
the thread sends whatever has piled up in one pipelined round trip, keeping only the newest progress frame of each
job. So a tight loop of progress calls costs the handler microseconds and the network a few frames, while the final
state always goes out. Frames are published after the change they carry is committed.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder

from ..job_json import status_frame
from ..transport.connections import connection_for_url
from ..types import ProgressFrame, StatusFrame
from .layer import JobsChannelLayer

if TYPE_CHECKING:
    from ..models import JobLog

logger = logging.getLogger(__name__)

Frame = ProgressFrame | StatusFrame
FRAME_EVENT = "job.frame"  # the layer event consumers handle (job_frame); it carries one browser frame
PUBLISH_ERROR_LOG_EVERY = 30.0  # seconds between warnings while the channel layer is unreachable
# The publisher thread sends at most one batch per this many seconds; a frame after a quiet spell goes at once.
# Woken for every frame instead, it would make a round trip beside each submit() of a tight loop and contend for
# the GIL with the thread that submits.
PUBLISH_MIN_GAP = 0.01


def frame_groups(job_id: str, owner_id: Any) -> list[str]:
    """The channel layer groups a job's frames go to."""
    groups = [f"job.{job_id}", "dashboard"]
    if owner_id is not None:
        groups.append(f"user.{owner_id}")
    return groups


def publish_status(job: JobLog) -> None:
    """Tell live listeners the job's status changed (call after the change is committed)."""
    publish(status_frame(job), job.owner_id)


def publish(frame: Frame, owner_id: Any = None) -> None:
    """Queue a frame for the groups job.<id>, dashboard and user.<owner>; never blocks, never raises."""
    publisher = _publisher()
    if publisher is not None:
        publisher.put(frame, frame_groups(frame["job_id"], owner_id))


def flush_published(timeout: float = 2.0) -> bool:
    """Wait until every frame queued so far in this process was sent (a worker process calls this before exiting)."""
    publisher = _publishers.get(os.getpid())
    return publisher.flush(timeout) if publisher is not None else True


class Publisher:
    """One thread per process that sends queued frames to the channel layer, coalescing what piles up."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._pending: list[tuple[Frame, list[str]]] = []
        self._queued = 0
        self._done = 0
        self._flushing = 0  # callers waiting in flush(): the gap is cut short for them
        self._last_send = 0.0
        lock = threading.Lock()
        self._wake = threading.Condition(lock)  # the publisher thread waits on this one
        self._sent = threading.Condition(lock)  # flush() callers wait on this one
        self._redis: Any = None
        self._redis_address: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_error_log = 0.0
        self._thread = threading.Thread(target=self._run, name="jobs-publisher", daemon=True)
        self._thread.start()

    def put(self, frame: Frame, groups: list[str]) -> None:
        with self._wake:
            if not self._pending:  # later frames join the batch the thread is already collecting
                self._wake.notify()
            self._pending.append((frame, groups))
            self._queued += 1

    def flush(self, timeout: float) -> bool:
        with self._sent:
            target = self._queued
            self._flushing += 1
            self._wake.notify()
            try:
                return self._sent.wait_for(lambda: self._done >= target, timeout)
            finally:
                self._flushing -= 1

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: bool(self._pending))
                gap = PUBLISH_MIN_GAP - (time.monotonic() - self._last_send)
                if gap > 0:  # more frames join this batch meanwhile
                    self._wake.wait_for(lambda: self._flushing > 0, gap)
                batch, self._pending = self._pending, []
                self._last_send = time.monotonic()
            try:
                self._send(coalesce(batch))
            except Exception as exc:  # noqa: BLE001 - live frames are best effort; SQL keeps the truth
                if time.monotonic() - self._last_error_log > PUBLISH_ERROR_LOG_EVERY:
                    self._last_error_log = time.monotonic()
                    logger.warning("Could not publish %d live frame(s): %s", len(batch), exc)
                self._redis = None
            with self._sent:
                self._done += len(batch)
                self._sent.notify_all()

    def _send(self, batch: list[tuple[Frame, list[str]]]) -> None:
        hosts = getattr(self.layer, "hosts", None) if isinstance(self.layer, JobsChannelLayer) else None
        if hosts and len(hosts) == 1 and isinstance(hosts[0], str):
            self._send_pipelined(hosts[0], batch)
        else:
            self._send_through_layer(batch)

    def _send_pipelined(self, address: str, batch: list[tuple[Frame, list[str]]]) -> None:
        # Our own layer: first ask which of the batch's channels anyone listens to (PUBSUB NUMSUB, one round trip),
        # then one PUBLISH per listened-to channel, all in a second round trip on a connection kept open. Most
        # jobs have no page open on them, so most frames cost nothing more. A socket that joins after the count
        # misses nothing: consumers join their groups before they read the job's snapshot from SQL, and frames
        # are published only after the change they carry is committed.
        if self._redis is None or self._redis_address != address:
            self._redis, self._redis_address = connection_for_url(address), address
        channels = {group: self.layer.group_channel(group) for _frame, groups in batch for group in groups}
        listened = {_text(channel) for channel, count in self._redis.pubsub_numsub(*channels.values()) if count}
        pipe = self._redis.pipeline(transaction=False)
        for frame, groups in batch:
            targets = [channels[group] for group in groups if channels[group] in listened]
            if targets:
                message = self.layer.serialize(layer_event(frame))
                for channel in targets:
                    pipe.publish(channel, message)
        if len(pipe):
            pipe.execute()

    def _send_through_layer(self, batch: list[tuple[Frame, list[str]]]) -> None:
        # Any other channel layer: its own group_send, on one event loop kept for the thread's lifetime so the
        # layer's connections are reused rather than rebuilt per frame.
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        for frame, groups in batch:
            for group in groups:
                self._loop.run_until_complete(self.layer.group_send(group, layer_event(frame)))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def layer_event(frame: Frame) -> dict[str, Any]:
    # The frame travels as the JSON text the browser gets: a web process relays it to every listening socket
    # without decoding and encoding it once per client.
    return {"type": FRAME_EVENT, "text": json.dumps(frame, cls=DjangoJSONEncoder)}


def coalesce(batch: list[tuple[Frame, list[str]]]) -> list[tuple[Frame, list[str]]]:
    """Drop progress frames that a newer progress frame of the same job supersedes; keep every status frame."""
    kept: list[tuple[Frame, list[str]]] = []
    newer_progress: set[str] = set()
    for item in reversed(batch):
        frame = item[0]
        if frame["type"] == "progress":
            if frame["job_id"] in newer_progress:
                continue
            newer_progress.add(frame["job_id"])
        kept.append(item)
    kept.reverse()
    return kept


_publishers: dict[int, Publisher] = {}
_no_layer: set[int] = set()
_publishers_lock = threading.Lock()


def _publisher() -> Publisher | None:
    # Per process: a forked child has no publisher thread of its parent, so it starts its own.
    pid = os.getpid()
    publisher = _publishers.get(pid)
    if publisher is not None or pid in _no_layer:
        return publisher
    with _publishers_lock:
        if pid not in _publishers and pid not in _no_layer:
            from channels.layers import get_channel_layer

            layer = get_channel_layer()
            if layer is None:
                _no_layer.add(pid)  # no CHANNEL_LAYERS: live progress is off, SQL still has everything
                return None
            _publishers[pid] = Publisher(layer)
            atexit.register(flush_published, 2.0)
    return _publishers[pid]
