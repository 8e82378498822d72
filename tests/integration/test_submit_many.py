"""submit_many(): bulk submission with the guarantees of submit(), in a few statements and round trips."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import jobs
from jobs import reconciler
from jobs.exceptions import InvalidPayload, JobTypeForbidden, PayloadTooLarge, UnknownJobType
from jobs.models import EventKind, JobEvent, JobLog, JobStatus
from jobs.transport.queues import queue_lengths
from tests.factories import make_user


def test_submit_many__queues_every_job_and_all_of_them_run(redis_url, drain, transactional_db):
    owner = make_user("importer")
    with CaptureQueriesContext(connection) as queries:
        submitted = jobs.submit_many("greet", [{"name": f"n{i}"} for i in range(100)], user=owner, priority="high")
    # Bulk INSERTs (one per batch the database allows: 2 in all on PostgreSQL), rows written queued: no UPDATE.
    verbs = [q["sql"].split()[0] for q in queries.captured_queries]
    assert verbs.count("UPDATE") == 0, verbs
    assert verbs.count("INSERT") <= (2 if connection.vendor == "postgresql" else 12), verbs
    assert len({job.pk for job in submitted}) == 100
    # Each row got its own payload, and what submit_many returned is what was written.
    rows = JobLog.objects.values_list("pk", "payload", "created_at")
    stored = {pk: (payload, created_at) for pk, payload, created_at in rows}
    assert stored == {job.pk: (job.payload, job.created_at) for job in submitted}
    assert [job.payload["name"] for job in submitted] == [f"n{i}" for i in range(100)]
    assert all(job.status == JobStatus.QUEUED for job in submitted)
    assert JobLog.objects.filter(status=JobStatus.QUEUED, owner=owner, priority="high").count() == 100
    assert JobEvent.objects.filter(kind=EventKind.SUBMITTED, job__in=submitted).count() == 100
    assert queue_lengths("greet")["high"] == 100

    drain(lambda: JobLog.objects.filter(status=JobStatus.SUCCEEDED).count() == 100)
    assert sorted(JobLog.objects.values_list("result", flat=True)) == sorted(f"Hello n{i}" for i in range(100))


def test_submit_many__returns_rows_as_submit_would(redis_url, transactional_db):
    owner = make_user("returned")
    first, second = jobs.submit_many("greet", [{"name": "a"}, {"name": "b"}], user=owner)
    with CaptureQueriesContext(connection) as queries:
        assert first.owner == owner and second.owner == owner  # known already: no query per row
    assert queries.captured_queries == []
    # Each row has its own containers: changing one row's never changes another's.
    first.failed_items.append({"item": "x"})
    first.progress_data["seen"] = 1
    assert (second.failed_items, second.progress_data) == ([], {})
    single = jobs.submit("greet", {"name": "c"}, user=owner)
    same = ("status", "priority", "queue", "max_attempts", "attempts", "progress_percent", "result", "run_at")
    assert [getattr(second, name) for name in same] == [getattr(single, name) for name in same]
    # And as stored: every column but the per-job ones, and the "submitted" event.
    stored_second, stored_single = (JobLog.objects.get(pk=job.pk) for job in (second, single))
    per_job = {"id", "payload", "created_at", "enqueued_at", "updated_at"}
    columns = [field.attname for field in JobLog._meta.concrete_fields if field.attname not in per_job]
    assert [getattr(stored_second, name) for name in columns] == [getattr(stored_single, name) for name in columns]
    assert stored_second.payload == second.payload and stored_second.payload["name"] == "b"
    assert stored_second.created_at == second.created_at
    events = [list(job.events.values_list("kind", "status", "attempt", "data")) for job in (second, single)]
    assert events[0] == events[1] and len(events[0]) == 1


def test_submit_many__bulk_statements_in_one_transaction(redis_url, transactional_db):
    with CaptureQueriesContext(connection) as queries:
        submitted = jobs.submit_many("greet", [{"name": f"n{i}"} for i in range(2500)])
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT INTO")]
    # Rows and events in bulk INSERTs of many rows each (as many as the database takes), not one per job.
    assert len(inserts) <= 2500 / 10, len(inserts)
    stored = dict(JobLog.objects.values_list("pk", "payload"))
    assert stored == {job.pk: job.payload for job in submitted} and len(stored) == 2500
    assert JobEvent.objects.filter(kind=EventKind.SUBMITTED).count() == 2500
    assert queue_lengths("greet")["normal"] == 2500


def test_submit_many__one_bad_payload_writes_and_enqueues_nothing(redis_url, transactional_db):
    payloads = [{"name": "ok"}, {"name": "fine"}, {"name": "x" * 50}, {"name": "never reached"}]
    with pytest.raises(InvalidPayload) as caught:
        jobs.submit_many("greet", payloads)
    assert "Payload #2" in str(caught.value)
    assert "name" in caught.value.errors["2"]
    assert JobLog.objects.count() == 0 and JobEvent.objects.count() == 0
    assert sum(queue_lengths("greet").values()) == 0


@pytest.mark.parametrize(
    ("type_name", "payloads", "error"),
    [
        ("no-such-type", [{}], UnknownJobType),
        ("admin-only", [{}], JobTypeForbidden),
        ("echo", [{"blob": "x" * 2_000_000}], PayloadTooLarge),
    ],
)
def test_submit_many__refusals_match_submit(redis_url, transactional_db, type_name, payloads, error):
    with pytest.raises(error):
        jobs.submit_many(type_name, payloads, user=make_user("plain"))
    assert JobLog.objects.count() == 0


def test_submit_many__delayed_and_capped_types_go_one_by_one(redis_url, transactional_db):
    delayed = jobs.submit_many("echo", [{"n": 1}, {"n": 2}], delay=60)
    capped = jobs.submit_many("capped", [{}, {}])
    assert {job.status for job in delayed} == {JobStatus.SCHEDULED}
    assert {JobLog.objects.get(pk=job.pk).status for job in capped} == {JobStatus.QUEUED}


def test_submit_many__redis_down_leaves_rows_pending_for_the_reconciler(own_redis):
    own_redis.stop()
    submitted = jobs.submit_many("echo", [{"n": i} for i in range(20)])
    assert set(JobLog.objects.values_list("status", flat=True)) == {JobStatus.PENDING}
    own_redis.start()
    reconciler.reconcile(grace=0)
    assert JobLog.objects.filter(pk__in=[job.pk for job in submitted], status=JobStatus.QUEUED).count() == 20
    assert sum(queue_lengths("echo").values()) == 20
