"""The live workers: each worker process's short beat, the registered workers that still beat, and removing the
registrations of those that stopped (rq keeps a killed worker's registration for minutes)."""

from __future__ import annotations

from typing import Any

from rq.serializers import JSONSerializer
from rq.worker import BaseWorker, Worker

from ..conf import jobs_settings
from .connections import get_connection
from .queues import job_queue_of


def worker_beat_key(name: str) -> str:
    return f"{jobs_settings().QUEUE_PREFIX}:worker-alive:{name}"


def beat_worker(name: str, ttl_seconds: float) -> None:
    """Say that worker process ``name`` lives for the next ``ttl_seconds`` (a few of its beats)."""
    get_connection().set(worker_beat_key(name), 1, px=max(1, int(ttl_seconds * 1000)))


def forget_worker_beat(name: str) -> None:
    get_connection().delete(worker_beat_key(name))


def _engine_workers() -> list[tuple[BaseWorker, bool]]:
    """rq's registered workers that serve this app's queues, each with whether its beat is alive.

    rq keeps a registration for minutes after its process was killed (until the hash's TTL): only the beat says
    who is alive. Workers of other apps sharing this Redis (no queue under QUEUE_PREFIX) are left out.
    """
    conn = get_connection()
    prefix = f"{jobs_settings().QUEUE_PREFIX}:"
    ours = [
        worker
        for worker in Worker.all(connection=conn, serializer=JSONSerializer)
        if worker.queue_names() and all(name.startswith(prefix) for name in worker.queue_names())
    ]
    with conn.pipeline(transaction=False) as pipe:
        for worker in ours:
            pipe.exists(worker_beat_key(worker.name))
        alive = pipe.execute()
    return [(worker, bool(beating)) for worker, beating in zip(ours, alive, strict=True)]


def workers_by_queue() -> dict[str, list[dict[str, Any]]]:
    """The live workers (registered in rq, beating), listed under every job queue they listen to."""
    listed: dict[str, list[dict[str, Any]]] = {}
    for worker, alive in _engine_workers():
        if not alive:
            continue
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


def count_workers() -> int:
    """Live workers: registered in rq and beating (after a ping, so an unreachable Redis raises TransportError)."""
    get_connection().ping()
    return sum(1 for _worker, alive in _engine_workers() if alive)


def forget_dead_workers() -> list[str]:
    """Unregister, as rq does on a worker's death, the workers whose beat lapsed (killed, or their host lost);
    returns their names. Their jobs are the reconciler's: their liveness keys lapse too."""
    dead = [worker for worker, alive in _engine_workers() if not alive]
    for worker in dead:
        worker.register_death()  # type: ignore[no-untyped-call]
    return [str(worker.name) for worker in dead]
