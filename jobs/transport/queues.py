"""The rq facade: queue names, the hand-off of jobs to rq, claims, cancel marks, liveness keys and queue state.

rq's data model is kept (queues, job hashes, registries), so rq's CLI, django-rq's dashboard and the admin see
everything. Where one round trip for many jobs matters, a script from transport.scripts writes what rq would.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job
from rq.job import JobStatus as RQJobStatus
from rq.rate_limit import RateLimit
from rq.serializers import JSONSerializer
from rq.utils import utcformat

from ..conf import jobs_settings
from ..types import PRIORITIES
from . import scripts
from .connections import blocking_connection, get_connection

logger = logging.getLogger(__name__)

# What rq tooling shows as every job's function. Only jobs_worker runs these jobs; it never imports this path.
RUNNER = "jobs.workers.runner.run_job"
# rq states after which rq will never run the job again on its own.
RQ_DONE_STATES = frozenset({"finished", "failed", "stopped", "canceled"})


def rq_queue_name(queue: str, priority: str) -> str:
    return f"{jobs_settings().QUEUE_PREFIX}:{queue}:{priority}"


def job_queue_of(rq_name: str) -> str:
    """The job queue name inside an rq queue name ("jobs:deploy:high" -> "deploy")."""
    return rq_name.split(":")[-2] if rq_name.count(":") >= 2 else rq_name


def get_queue(name: str) -> Queue:
    return Queue(name, connection=get_connection(), serializer=JSONSerializer)


def queue_names(job_queues: Iterable[str]) -> list[str]:
    """rq queue names in strict priority order: every critical queue, then every high one, and so on."""
    chosen = sorted(set(job_queues))
    return [rq_queue_name(queue, priority) for priority in PRIORITIES for queue in chosen]


# ---------------------------------------------------------------------------------------------------------------
# The hand-off


@dataclass(frozen=True)
class Handoff:
    """What rq needs to know of a job to queue it (SQL keeps everything else, the payload included)."""

    id: str
    type: str
    queue: str  # the job queue: the rq queue is this one at the job's priority
    priority: str
    timeout: int  # seconds; rq records it on the job hash
    retention: int  # seconds rq keeps the job's outcome
    due: datetime | None = None  # not before then (rq's scheduled registry holds it until it is due)
    concurrency: int | None = None  # at most this many of the type at once, through rq's RateLimit slots


def push(jobs: Sequence[Handoff], *, replace: bool = False) -> None:
    """Hand jobs to rq. Ready ones go to the end of their queue, one round trip per rq queue and type (per 1,000
    jobs); jobs due later, or capped by a concurrency limit, through rq's own enqueue_at and enqueue.

    ``replace``: whatever rq still holds under these ids (a finished or failed job, a cancel mark) goes first, so
    the job runs again as new. Raises TransportError when Redis fails; what was pushed before stays pushed.
    """
    if replace:
        forget(job.id for job in jobs)
    now = datetime.now(UTC)
    batches: dict[tuple[str, int, int], list[Handoff]] = {}
    for job in jobs:
        if job.concurrency or (job.due is not None and job.due > now):
            _enqueue_one(job, now)
        else:
            name = rq_queue_name(job.queue, job.priority)
            batches.setdefault((name, job.timeout, job.retention), []).append(job)
    for (name, timeout, retention), batch in batches.items():
        template = _hash_template(name, timeout, retention)
        for start in range(0, len(batch), scripts.PUSH_CHUNK):
            _push_ready(name, template, batch[start : start + scripts.PUSH_CHUNK])


def _rq_options(job: Handoff) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "args": (job.id,),
        "job_timeout": job.timeout,
        "result_ttl": job.retention,
        "failure_ttl": job.retention,
        "description": f"{job.type} {job.id}",
    }


def _enqueue_one(job: Handoff, now: datetime) -> None:
    queue = get_queue(rq_queue_name(job.queue, job.priority))
    options = _rq_options(job)
    if job.concurrency:
        options["rate_limit"] = RateLimit(f"{jobs_settings().QUEUE_PREFIX}:{job.type}", job.concurrency)
    if job.due is not None and job.due > now:
        # rq scores scheduled jobs in whole seconds, truncating: round up so a job never starts early.
        due = job.due.replace(microsecond=0) + timedelta(seconds=1 if job.due.microsecond else 0)
        queue.enqueue_at(due, RUNNER, **options)
    else:
        queue.enqueue(RUNNER, **options)


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
        # One argument rather than two per field: each value is the text redis-py would have sent for it.
        fields = [text for name, value in mapping.items() if name not in per_job for text in (name, _as_text(value))]
        before, _, after = job.data.partition(_JOB_ID_PLACEHOLDER.encode())
        template = _hash_templates[key] = _HashTemplate(json.dumps(fields), (before, after))
    return template


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else repr(value)


def _push_ready(queue_name: str, template: _HashTemplate, jobs: Sequence[Handoff]) -> None:
    before, after = template.data_parts
    queue_key = Queue.redis_queue_namespace_prefix + queue_name
    args: list[Any] = [Queue.redis_queues_keys, queue_key, utcformat(datetime.now(UTC)), template.fields]
    for job in jobs:
        args += [job.id, zlib.compress(before + job.id.encode() + after), f"{job.type} {job.id}"]
    scripts.run(get_connection(), scripts.PUSH, [], args)


def forget(job_ids: Iterable[str]) -> None:
    """Delete what rq holds of these jobs (hash, registries, result) and their cancel marks."""
    conn = get_connection()
    for job_id in job_ids:
        try:
            Job.fetch(job_id, connection=conn, serializer=JSONSerializer).delete()
        except NoSuchJobError:
            pass
        conn.delete(cancel_mark_key(job_id))


def drop_waiting(job_id: str) -> None:
    """Take a waiting job out of its queue, the scheduled registry and any concurrency wait list."""
    try:
        Job.fetch(job_id, connection=get_connection(), serializer=JSONSerializer).cancel()
    except NoSuchJobError:
        pass


# ---------------------------------------------------------------------------------------------------------------
# Claims: the engine's side


@dataclass(frozen=True)
class Claim:
    """A job a worker took off its rq queue: rq already sees it started under ``execution_id``."""

    job_id: str
    queue_name: str  # the rq queue it came from
    job_type: str  # as the rq job's description names it (push writes "<type> <id>"); SQL has the truth
    timeout: int
    rate_limited: bool  # holds one of rq's concurrency slots, which rq's own outcome handling releases
    execution_id: str
    started_at: float  # time.time()


def claim(
    rq_queue_names: list[str], wanted: int, *, worker_name: str, alive_seconds: float, block: float = 0
) -> list[Claim]:
    """Take up to ``wanted`` jobs, highest priority first, in one round trip; with ``block`` (seconds), wait that
    long for a first one when every queue is empty. Paused queues are skipped."""
    conn = get_connection()
    keys = [Queue.redis_queue_namespace_prefix + name for name in rq_queue_names]
    job_queues = [job_queue_of(name) for name in rq_queue_names]
    execution_id = uuid.uuid4().hex[:16]

    def claim_from_lists(first_id: str = "", first_index: int = 0) -> tuple[list[Any], float]:
        started = time.time()
        args = [wanted, worker_name, utcformat(datetime.fromtimestamp(started, UTC)), started, alive_key("")]
        args += [max(1, int(alive_seconds * 1000)), _paused_key(), execution_id, first_id, first_index]
        return scripts.run(conn, scripts.CLAIM, keys, [*args, *job_queues]), started

    rows, started = claim_from_lists()
    if not rows and block > 0:
        # Wait on the queues not paused only: a paused queue's waiting job would wake the wait at once, again
        # and again.
        paused = paused_queues()
        awake = [key for key, job_queue in zip(keys, job_queues, strict=True) if job_queue not in paused]
        if not awake:
            time.sleep(block)
            return []
        popped = blocking_connection(block).blpop(awake, timeout=block)
        if popped is None:
            return []
        key, job_id = popped
        # The popped job and as many more as wanted, timed from now rather than from before the wait.
        rows, started = claim_from_lists(_text(job_id), keys.index(_text(key)) + 1)
    claims = []
    for row in rows:
        refusal = _refusal(_text(row[0]), row[5], row[6])
        if refusal:
            _refuse(conn, _text(row[0]), refusal, worker_name, execution_id)
            continue
        claims.append(
            Claim(
                job_id=_text(row[0]),
                queue_name=_text(row[1]),
                job_type=_text(row[4]).split(" ", 1)[0],
                timeout=int(float(_text(row[2]))),
                rate_limited=bool(row[3]),
                execution_id=execution_id,
                started_at=started,
            )
        )
    return claims


def _refusal(job_id: str, data: bytes, callbacks: bytes) -> str:
    """Why an rq job on the engine's queues must not run, or "" when it is one of ours: its call is exactly
    RUNNER(<its own id>), it has no callbacks, and its id is a JobLog id.

    The engine never imports what a job hash names; it runs the JobLog row its id names. A hash written by anyone
    else with access to Redis (another function, rq callbacks, an id that names no row) is refused before anything
    is imported or read from the database.
    """
    if callbacks:
        return "it names rq callbacks"
    try:
        uuid.UUID(job_id)
    except ValueError:
        return "its id is not a job id"
    try:
        call = json.loads(zlib.decompress(data))  # what rq's JSONSerializer.loads does
    except (zlib.error, ValueError, TypeError, UnicodeDecodeError):
        return "its call data is not what the engine writes"
    if call == [RUNNER, None, [job_id], {}]:
        return ""
    function = call[0] if isinstance(call, list) and call else call
    if function == RUNNER:
        return "it calls the engine's runner on something other than its own id"
    return f"it calls {str(function)[:200]!r}, not the engine's runner"


def _refuse(conn: Redis, job_id: str, reason: str, worker_name: str, execution_id: str) -> None:
    """Fail a refused rq job loudly: an error in the log, and the job in rq's FailedJobRegistry with the reason."""
    logger.error("Refused rq job %s: %s. Only jobs submitted through jobs.services run.", job_id, reason)
    try:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    except NoSuchJobError:
        return
    with conn.pipeline() as pipe:
        Execution(execution_id, job_id, connection=conn, worker_name=worker_name).delete(job, pipe)
        job.set_status(RQJobStatus.FAILED, pipeline=pipe)
        job.ended_at = datetime.now(UTC)
        job._handle_failure(f"Refused by the jobs engine: {reason}.", pipeline=pipe, worker_name=worker_name)
        pipe.delete(alive_key(job_id))
        pipe.execute()


def finish_claims(claims: Sequence[tuple[Claim, int]], worker_key: str) -> None:
    """Record succeeded claims in rq (job hash, registries, worker stats), each with its result TTL, at once."""
    if not claims:
        return
    now = time.time()
    args: list[Any] = [utcformat(datetime.fromtimestamp(now, UTC)), now, worker_key, alive_key("")]
    for done, ttl in claims:
        args += [done.job_id, done.queue_name, max(1, ttl), done.execution_id, round(now - done.started_at, 6)]
    scripts.run(get_connection(), scripts.FINISH, [], args)


def unclaim(claims: Sequence[Claim], worker_name: str) -> None:
    """Hand claims back to the head of their queues untouched (the database could not start them)."""
    conn = get_connection()
    for taken in claims:
        try:
            job = Job.fetch(taken.job_id, connection=conn, serializer=JSONSerializer)
        except NoSuchJobError:
            continue  # deleted meanwhile: nothing to hand back
        with conn.pipeline() as pipe:
            Execution(taken.execution_id, taken.job_id, connection=conn, worker_name=worker_name).delete(job, pipe)
            pipe.delete(alive_key(taken.job_id))
            pipe.hset(job.key, "status", "queued")
            pipe.lpush(Queue.redis_queue_namespace_prefix + taken.queue_name, taken.job_id)
            pipe.execute()


# ---------------------------------------------------------------------------------------------------------------
# Cancel marks and liveness keys


def cancel_mark_key(job_id: str) -> str:
    return f"{jobs_settings().QUEUE_PREFIX}:cancel:{job_id}"


def mark_canceled(job_id: str, ttl_seconds: int) -> None:
    get_connection().set(cancel_mark_key(job_id), 1, ex=max(1, ttl_seconds))


def alive_key(job_id: str) -> str:
    return f"{jobs_settings().QUEUE_PREFIX}:alive:{job_id}"


def beat_and_check_cancel(job_ids: list[str], beat_seconds: float | None) -> list[bool]:
    """For many running jobs in one round trip: refresh their liveness keys (unless ``beat_seconds`` is None) and
    say which have a cancel mark."""
    if not job_ids:
        return []
    with get_connection().pipeline(transaction=False) as pipe:
        if beat_seconds is not None:
            for job_id in job_ids:
                pipe.set(alive_key(job_id), 1, px=max(1, int(beat_seconds * 1000)))
        for job_id in job_ids:
            pipe.exists(cancel_mark_key(job_id))
        replies = pipe.execute()
    return [bool(found) for found in replies[-len(job_ids) :]]


def which_alive(job_ids: list[str]) -> set[str]:
    with get_connection().pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(alive_key(job_id))
        found = pipe.execute()
    return {job_id for job_id, exists in zip(job_ids, found, strict=True) if exists}


# ---------------------------------------------------------------------------------------------------------------
# Queue state


def queue_head(queue: str, priority: str) -> str | None:
    """The id at the head of an rq queue (the next one a worker takes), or None when it is empty."""
    head = get_connection().lindex(Queue.redis_queue_namespace_prefix + rq_queue_name(queue, priority), 0)
    return None if head is None else _text(head)


def rq_states(job_ids: list[str]) -> dict[str, str | None]:
    with get_connection().pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), "status")
        states = pipe.execute()
    return {job_id: None if state is None else _text(state) for job_id, state in zip(job_ids, states, strict=True)}


def which_waiting_in_redis(job_ids: list[str]) -> set[str]:
    """The ids among ``job_ids`` that rq still holds and may still run (its job hash exists, not in a final state).

    A job rq gave up on while SQL still says it waits (its worker died after the claim, and rq's registry cleanup
    failed it as abandoned) is not among them.
    """
    return {job_id for job_id, state in rq_states(job_ids).items() if state is not None and state not in RQ_DONE_STATES}


def _paused_key() -> str:
    return f"{jobs_settings().QUEUE_PREFIX}:paused"


def pause(queue: str) -> None:
    get_connection().sadd(_paused_key(), queue)


def resume(queue: str) -> None:
    get_connection().srem(_paused_key(), queue)


def paused_queues() -> set[str]:
    return {_text(member) for member in get_connection().smembers(_paused_key())}


def set_paused_queues(queues: Iterable[str]) -> tuple[set[str], set[str]]:
    """Make Redis's set of paused queues exactly ``queues`` (SQL's); returns (paused, resumed) by the change."""
    wanted = set(queues)
    conn = get_connection()
    present = {_text(member) for member in conn.smembers(_paused_key())}
    added, removed = wanted - present, present - wanted
    with conn.pipeline() as pipe:
        if added:
            pipe.sadd(_paused_key(), *added)
        if removed:
            pipe.srem(_paused_key(), *removed)
        pipe.execute()
    return added, removed


def queue_lengths(queue: str) -> dict[str, int]:
    """Jobs waiting in Redis per priority level of one job queue."""
    with get_connection().pipeline(transaction=False) as pipe:
        for priority in PRIORITIES:
            pipe.llen(Queue.redis_queue_namespace_prefix + rq_queue_name(queue, priority))
        lengths = pipe.execute()
    return dict(zip(PRIORITIES, (int(n) for n in lengths), strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_time_ms(conn: Redis | None = None) -> int:
    """Redis's clock in milliseconds: every worker host must agree on a rate limit's window."""
    seconds, micros = (conn or get_connection()).time()
    return int(seconds) * 1000 + int(micros) // 1000


def acquire_start(job_type_name: str, count: int, period_seconds: int) -> float:
    """Take a start slot of a per-period rate limit; 0.0 when granted, else seconds to wait before trying again."""
    conn = get_connection()
    key = f"{jobs_settings().QUEUE_PREFIX}:rate:{job_type_name}"
    args = [redis_time_ms(conn), period_seconds * 1000, count, uuid.uuid4().hex]
    return int(scripts.run(conn, scripts.ACQUIRE_START, [key], args)) / 1000.0
