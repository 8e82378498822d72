"""The Lua scripts of jobs.transport.scripts write what the installed rq writes itself: a push like rq's enqueue, a
claim like rq's dequeue and prepare_execution, a finish like rq's handle_job_success. An rq upgrade that changes its
format fails here first."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rq import Queue
from rq.job import Job
from rq.registry import FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker, Worker

import jobs
from jobs import registry
from jobs.lifecycle.handoff import to_handoff
from jobs.models import JobLog
from jobs.transport import queues as transport
from jobs.transport.queues import RUNNER, _rq_options, get_queue, rq_queue_name
from jobs.transport.worker import Registration

pytestmark = pytest.mark.django_db(transaction=True)

PER_JOB = (b"created_at", b"enqueued_at", b"data", b"description", b"started_at", b"last_heartbeat", b"ended_at")


def stored(redis_conn, job_id: str) -> dict[bytes, bytes]:
    """A job hash less what differs between any two jobs (ids, times)."""
    fields = redis_conn.hgetall(f"rq:job:{job_id}")
    return {name: value for name, value in fields.items() if name not in PER_JOB}


def test_push__writes_the_job_hash_and_list_entry_rq_itself_writes(redis_url, redis_conn):
    ours, theirs = jobs.submit_many("greet", [{"name": "Ada"}, {"name": "Bob"}], priority="high")
    queue = get_queue(rq_queue_name("greet", "high"))
    redis_conn.delete(f"rq:job:{theirs.pk}")
    redis_conn.lrem(queue.key, 0, str(theirs.pk))
    options = _rq_options(to_handoff(theirs))
    options["timeout"] = options.pop("job_timeout")  # prepare_data's name for it
    queue.enqueue_many([Queue.prepare_data(RUNNER, **options)])

    assert stored(redis_conn, str(ours.pk)) == stored(redis_conn, str(theirs.pk))
    for per_job in (b"created_at", b"enqueued_at", b"data", b"description"):
        assert redis_conn.hget(f"rq:job:{ours.pk}", per_job)
    assert {b"status", b"origin", b"timeout", b"result_ttl"} <= set(stored(redis_conn, str(ours.pk)))
    assert redis_conn.ttl(f"rq:job:{ours.pk}") == -1
    assert [v.decode() for v in redis_conn.lrange(queue.key, 0, -1)] == [str(ours.pk), str(theirs.pk)]
    assert queue.key.encode() in redis_conn.smembers(Queue.redis_queues_keys)
    fetched = Job.fetch(str(ours.pk), connection=redis_conn, serializer=JSONSerializer)
    assert (fetched.func_name, fetched.args, fetched.description) == (RUNNER, [str(ours.pk)], f"greet {ours.pk}")
    assert fetched.get_status() == "queued" and fetched.origin == queue.name


def test_push__jobs_of_two_types_sharing_a_queue_keep_each_types_timeout(redis_url, redis_conn):
    first, second = (jobs.submit_many(name, [{}])[0] for name in ("echo", "slow"))
    assert registry.get("echo").timeout != registry.get("slow").timeout
    for job in (first, second):
        redis_conn.delete(f"rq:job:{job.pk}")
    second.queue = first.queue  # as if they shared an rq queue: both in one push
    transport.push([to_handoff(first), to_handoff(second)])
    assert int(redis_conn.hget(f"rq:job:{first.pk}", "timeout")) == registry.get("echo").timeout
    assert int(redis_conn.hget(f"rq:job:{second.pk}", "timeout")) == registry.get("slow").timeout


def _one_started_by_each(name: str) -> tuple[Any, Any, Any, Any, Any]:
    """The first job of rq queue ``name`` started by rq's own worker, the second claimed by ours."""
    queue = get_queue(name)
    rq_worker = SimpleWorker([queue], name="rq-worker", connection=queue.connection, serializer=JSONSerializer)
    rq_worker.register_birth()
    job, _queue = rq_worker.dequeue_job_and_maintain_ttl(None)
    execution = rq_worker.prepare_execution(job)
    rq_worker.prepare_job_execution(job)
    registration = Registration([name], "our-worker")
    registration.register()
    [claim] = transport.claim([name], 1, worker_name="our-worker", alive_seconds=5)
    return rq_worker, job, execution, registration, claim


def _execution_keys(redis_conn, job_id: str) -> dict[str, object]:
    """Where an execution of ``job_id`` is recorded, with the field names of its hash."""
    [execution_id] = [v.decode() for v in redis_conn.zrange(f"rq:executions:{job_id}", 0, -1)]
    fields = redis_conn.hgetall(f"rq:execution:{job_id}:{execution_id}")
    return {"execution_fields": sorted(fields), "worker_name": fields[b"worker_name"], "id": execution_id}


def test_claim__marks_the_job_started_and_records_its_execution_as_rq_does(redis_url, redis_conn):
    theirs, ours = jobs.submit_many("greet", [{"name": "Ada"}, {"name": "Bob"}])
    name = rq_queue_name("greet", "normal")
    _rq_worker, job, rq_execution, _registration, claim = _one_started_by_each(name)
    assert (job.id, claim.job_id) == (str(theirs.pk), str(ours.pk))

    assert stored(redis_conn, str(ours.pk)) | {b"worker_name": b"rq-worker"} == stored(redis_conn, str(theirs.pk))
    theirs_keys, ours_keys = _execution_keys(redis_conn, str(theirs.pk)), _execution_keys(redis_conn, str(ours.pk))
    assert ours_keys["execution_fields"] == theirs_keys["execution_fields"]
    assert ours_keys["worker_name"] == b"our-worker" and ours_keys["id"] == claim.execution_id
    started = StartedJobRegistry(name, connection=redis_conn, serializer=JSONSerializer)
    assert sorted(started.get_job_ids()) == sorted([str(theirs.pk), str(ours.pk)])
    assert f"{ours.pk}:{claim.execution_id}".encode() in redis_conn.smembers("rq:worker:our-worker:executions")
    assert f"{theirs.pk}:{rq_execution.id}".encode() in redis_conn.smembers("rq:worker:rq-worker:executions")
    # rq's tooling finds each worker's current job the same way.
    current = {w.name: w.get_current_job_id() for w in Worker.all(connection=redis_conn, serializer=JSONSerializer)}
    assert current == {"rq-worker": str(theirs.pk), "our-worker": str(ours.pk)}


def test_finish__leaves_what_rqs_success_handling_leaves(redis_url, redis_conn):
    theirs, ours = jobs.submit_many("greet", [{"name": "Ada"}, {"name": "Bob"}])
    name = rq_queue_name("greet", "normal")
    queue = get_queue(name)
    rq_worker, job, execution, registration, claim = _one_started_by_each(name)
    time.sleep(0.01)

    job.ended_at = job.started_at
    started = StartedJobRegistry(name, connection=redis_conn, serializer=JSONSerializer)
    rq_worker.handle_job_success(job, queue, started, execution)
    registration.finish([(claim, 600)])

    assert stored(redis_conn, str(ours.pk)) | {b"worker_name": b"rq-worker"} == stored(redis_conn, str(theirs.pk))
    for job_id in (str(theirs.pk), str(ours.pk)):
        assert Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer).get_status() == "finished"
        assert redis_conn.zcard(f"rq:executions:{job_id}") == 0
        assert not redis_conn.keys(f"rq:execution:{job_id}:*")
        assert redis_conn.hget(f"rq:job:{job_id}", "ended_at")
    assert started.get_job_ids() == []
    finished = FinishedJobRegistry(name, connection=redis_conn, serializer=JSONSerializer)
    assert sorted(finished.get_job_ids()) == sorted([str(theirs.pk), str(ours.pk)])
    for worker in ("rq-worker", "our-worker"):
        assert redis_conn.scard(f"rq:worker:{worker}:executions") == 0
        assert redis_conn.hget(f"rq:worker:{worker}", "successful_job_count") == b"1"
    assert not redis_conn.exists(transport.alive_key(str(ours.pk)))
    assert JobLog.objects.count() == 2


def test_runner__the_function_rq_names_exists_and_refuses_to_run_in_an_rq_worker():
    from django.utils.module_loading import import_string

    from jobs.workers.runner import run_job

    assert import_string(RUNNER) is run_job
    with pytest.raises(RuntimeError, match="runs in `manage.py jobs_worker`"):
        run_job("00000000-0000-0000-0000-000000000001")
