"""JobContext: what a handler talks to. Progress goes to the JobLog row (coalesced) and to the channel layer.

Live frames leave through one background thread per process (``publish``): a handler's progress call only appends
to a list, and the thread sends whatever has piled up in one pipelined round trip, keeping only the newest progress
frame of each job. So a tight loop of progress calls costs the handler microseconds and the network a few frames,
while the final state always goes out.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.utils import timezone

from .conf import jobs_settings
from .job_json import status_frame
from .transport.connections import connection_for_url
from .types import FailedItem, ProgressFrame, StatusFrame

if TYPE_CHECKING:
    from .models import JobLog

logger = logging.getLogger(__name__)

Frame = ProgressFrame | StatusFrame
FRAME_EVENT = "job.frame"  # the layer event consumers handle (job_frame); it carries one browser frame
PUBLISH_ERROR_LOG_EVERY = 30.0  # seconds between warnings while the channel layer is unreachable
# The publisher thread sends at most one batch per this many seconds; a frame after a quiet spell goes at once.
# Woken for every frame, it ran a round trip beside each submit() of a tight loop of submissions (or each start in
# a busy worker), and the two threads took turns at the GIL: a sixth of the loop's time went to it.
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
    """Wait until every frame queued so far in this process was sent (a work horse calls this before exiting)."""
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
        from .layers import JobsChannelLayer

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
    # Per process: a forked work horse has no publisher thread of its parent, so it starts its own.
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


def load_channel_layer() -> None:
    """Build the configured channel layer, importing its modules, without connecting or starting a publisher.

    A forking worker calls this before each fork: every work horse then inherits the layer instead of importing it
    on its first frame (channels-redis, msgpack and cryptography: ~18 ms per job, more than the job's own SQL).
    """
    from channels.layers import get_channel_layer

    get_channel_layer()  # channels keeps it, per process, from now on


def reset_publisher() -> None:
    """Forget this process's channel layer decision (the layer settings changed, e.g. in tests)."""
    with _publishers_lock:
        _publishers.pop(os.getpid(), None)
        _no_layer.discard(os.getpid())


class JobContext:
    """Given to every handler: progress, cancellation and per-item failures of one attempt."""

    def __init__(self, job: JobLog, attempt: int) -> None:
        self.job_id = str(job.id)
        self.attempt = attempt
        self.job_type = job.job_type
        self.owner_id = job.owner_id
        self.percent = job.progress_percent
        self.message = job.progress_message
        self.stage = job.progress_stage
        self.data: dict[str, Any] = dict(job.progress_data or {})
        self.failed_items: list[FailedItem] = list(job.failed_items or [])
        self.failed_items_count = job.failed_items_count
        self._settings = jobs_settings()
        self._dirty = False  # changes not yet written to the row
        self._unpublished = False  # changes not yet sent to live listeners
        self._last_write = 0.0
        self._last_publish = 0.0
        self._canceled = threading.Event()
        self._write_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    # The handler's API -------------------------------------------------------------------------

    def progress(
        self,
        percent: float | None = None,
        message: str | None = None,
        *,
        stage: str | None = None,
        data: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        """Report progress; extra keywords (current=, total=) land in ``data``. Cheap to call in a tight loop."""
        if percent is not None:
            self.percent = max(0, min(100, int(percent)))
        if message is not None:
            self.message = str(message)[:500]
        if stage is not None:
            self.stage = str(stage)[:100]
        if data is not None or extra:
            self.data = {**self.data, **(data or {}), **extra}
        self._changed()

    def _changed(self) -> None:
        self._dirty = self._unpublished = True
        now = time.monotonic()
        if now - self._last_publish >= self._settings.PROGRESS_PUBLISH_INTERVAL:
            self.publish_pending()
        if now - self._last_write >= self._settings.PROGRESS_MIN_INTERVAL:
            self.flush()

    def is_canceled(self) -> bool:
        """True once somebody asked to cancel this job; the handler should return soon after."""
        return self._canceled.is_set()

    def item_failed(self, item: Any, error: Any) -> None:
        """Record one failed item (a CSV row, a recipient) while the job goes on: a partial result."""
        self.failed_items_count += 1
        if len(self.failed_items) < self._settings.MAX_FAILED_ITEMS:
            self.failed_items.append({"item": str(item)[:500], "error": str(error)[:1000]})
        self._dirty = True

    # The runner's side -------------------------------------------------------------------------

    def progress_fields(self) -> dict[str, Any]:
        return {
            "progress_percent": self.percent,
            "progress_message": self.message,
            "progress_stage": self.stage,
            "progress_data": self.data,
            "failed_items": self.failed_items,
            "failed_items_count": self.failed_items_count,
        }

    def apply(self, fields: dict[str, Any]) -> None:
        """Take progress reported from elsewhere (an isolated child's progress_fields()), as if reported here."""
        self.percent, self.message = fields["progress_percent"], fields["progress_message"]
        self.stage, self.data = fields["progress_stage"], fields["progress_data"]
        self.failed_items, self.failed_items_count = fields["failed_items"], fields["failed_items_count"]
        self._changed()

    def progress_frame(self) -> ProgressFrame:
        return {
            "type": "progress",
            "job_id": self.job_id,
            "percent": self.percent,
            "message": self.message,
            "stage": self.stage,
            "data": self.data,
            "at": timezone.now().isoformat(),
        }

    def publish_pending(self, *, older_than: float = 0.0) -> None:
        """Send the latest progress to live listeners if it changed (and was last sent ``older_than`` s ago)."""
        if self._unpublished and time.monotonic() - self._last_publish >= older_than:
            self._unpublished = False
            self._last_publish = time.monotonic()
            publish(self.progress_frame(), self.owner_id)

    def flush(self) -> None:
        """Write pending progress to the row now."""
        if not self._dirty:
            return
        with self._write_lock:
            self._dirty = False
            self._last_write = time.monotonic()
            fields = self.progress_fields()
            if _in_event_loop():
                # The ORM refuses to run inside an event loop (async handlers); a helper thread has none.
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs-progress")
                self._executor.submit(self._write, fields).result()
            else:
                self._write(fields)

    def _write(self, fields: dict[str, Any]) -> None:
        from .models import JobLog, JobStatus

        # Only while running: a late write must never overwrite a terminal row.
        JobLog.objects.filter(pk=self.job_id, status=JobStatus.RUNNING).update(**fields)

    def mark_canceled(self) -> None:
        self._canceled.set()

    def close(self) -> None:
        if self._executor is not None:
            # The helper thread opened its own database connection; close it before the thread goes.
            self._executor.submit(connections.close_all).result()
            self._executor.shutdown(wait=True)
            self._executor = None


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
