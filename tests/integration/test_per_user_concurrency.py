"""@job_type(per_user_concurrency=K): one owner never holds more than K running jobs of a type, across workers."""

from __future__ import annotations

import pytest
from redis import Redis

from jobs import submit
from jobs.models import EventKind, JobEvent, JobLog, JobStatus
from jobs.transport import limits
from jobs.transport.queues import alive_key
from tests.conftest import wait_for
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def fresh(job: JobLog) -> JobLog:
    return JobLog.objects.get(pk=job.pk)


@pytest.mark.slow
def test_per_user_cap__one_owner_cannot_hold_every_slot_of_a_capped_type(workers):
    # Two processes of two slots each: room for all four jobs at once, and the type's own cap is 3.
    workers.start("--processes", "2", "--concurrency", "2", "--types", "per-user-capped", one_process=False)
    alice, bob = make_user("alice"), make_user("bob")
    hers = [submit("per-user-capped", {"seconds": 1.5}, user=alice) for _ in range(3)]
    his = submit("per-user-capped", {"seconds": 1.5}, user=bob)
    system = submit("per-user-capped", {"seconds": 1.5})

    wait_for(
        lambda: all(fresh(job).is_finished for job in [*hers, his, system]),
        timeout=60,
        what=f"every job to finish {workers.output()}",
    )
    hers, his, system = [fresh(job) for job in hers], fresh(his), fresh(system)
    assert {job.status for job in [*hers, his, system]} == {JobStatus.SUCCEEDED}, workers.output()
    spans = sorted((job.started_at, job.finished_at) for job in hers)
    first = spans[0]
    # Bob's job (and the ownerless one) did not wait for alice's: they ran beside her first one.
    assert his.started_at < first[1] and system.started_at < first[1]
    # Alice's ran one at a time: each started after the one before had finished.
    assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:], strict=False)), spans
    # Waiting for her slot spent no attempt; the timeline says why they waited.
    assert {job.attempts for job in hers} == {1}
    assert JobEvent.objects.filter(job__in=hers, kind=EventKind.DEFERRED).exists()
    assert not JobEvent.objects.filter(job__in=[his, system], kind=EventKind.DEFERRED).exists()


def test_user_slot__held_while_its_job_lives_and_freed_when_released(redis_conn: Redis):
    # A claim sets the job's liveness key; the slot lasts as long as it does, so a killed worker's slot frees itself.
    redis_conn.set(alive_key("job-1"), 1, px=60_000)
    assert limits.take_user_slot("t", "7", "job-1", 1)
    assert limits.take_user_slot("t", "7", "job-1", 1)  # a duplicate delivery holds the slot it had
    assert not limits.take_user_slot("t", "7", "job-2", 1)
    assert limits.take_user_slot("t", "8", "job-3", 1)  # another owner's slots are their own
    redis_conn.delete(alive_key("job-1"))  # its worker was killed: the beat stopped, the key lapsed
    redis_conn.set(alive_key("job-2"), 1, px=60_000)
    assert limits.take_user_slot("t", "7", "job-2", 1)
    limits.release_user_slots([("t", "7", "job-2")])
    assert limits.take_user_slot("t", "7", "job-4", 1)
