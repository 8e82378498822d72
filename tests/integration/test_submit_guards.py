"""What submit(), get_or_submit() and submit_many() refuse whoever calls them, and idempotency keys of deleted users."""

from __future__ import annotations

import math

import pytest

import jobs
from jobs import services
from jobs.exceptions import InvalidPayload, SubmitRateExceeded
from jobs.models import JobEvent, JobLog, JobStatus
from tests.factories import make_user


def counts() -> tuple[int, int]:
    return JobLog.objects.count(), JobEvent.objects.count()


# --------------------------------------------------------------------------------------------------------------
# The per-user submission budget (JOBS["SUBMIT_RATE"])


def test_submit__a_users_loop_hits_the_budget_and_writes_nothing_more(redis_url, settings, transactional_db):
    settings.JOBS = {**settings.JOBS, "SUBMIT_RATE": "3/minute"}
    alice, bob = make_user("alice"), make_user("bob")
    for i in range(3):  # as the demo's forms do: submit() straight from a view
        jobs.submit("echo", {"i": i}, user=alice)
    before = counts()

    with pytest.raises(SubmitRateExceeded) as refused:
        jobs.submit("echo", {"i": 3}, user=alice)

    assert refused.value.code == "throttled" and 0 < refused.value.retry_after <= 60
    assert counts() == before
    jobs.submit("echo", {"i": 0}, user=bob)  # per user: bob has his own budget


def test_submit__system_submissions_never_pay(redis_url, settings, transactional_db):
    settings.JOBS = {**settings.JOBS, "SUBMIT_RATE": "2/minute"}
    for i in range(10):
        jobs.submit("echo", {"i": i})
    jobs.submit_many("echo", [{"i": i} for i in range(10)])
    assert JobLog.objects.count() == 20
    # And they do not eat into anyone's budget.
    alice = make_user("alice")
    jobs.submit_many("echo", [{}, {}], user=alice)


def test_get_or_submit__an_idempotent_replay_does_not_pay(redis_url, settings, transactional_db):
    settings.JOBS = {**settings.JOBS, "SUBMIT_RATE": "2/minute"}
    alice = make_user("alice")
    first, created = services.get_or_submit("echo", {"a": 1}, user=alice, idempotency_key="k1")
    assert created
    for _ in range(5):
        again, created = services.get_or_submit("echo", {"a": 1}, user=alice, idempotency_key="k1")
        assert (again.pk, created) == (first.pk, False)
    services.get_or_submit("echo", {"a": 2}, user=alice, idempotency_key="k2")  # the second paid submission
    with pytest.raises(SubmitRateExceeded):
        services.get_or_submit("echo", {"a": 3}, user=alice, idempotency_key="k3")


def test_submit_many__over_the_budget_writes_nothing(redis_url, settings, transactional_db):
    settings.JOBS = {**settings.JOBS, "SUBMIT_RATE": "5/minute"}
    alice = make_user("alice")
    jobs.submit_many("echo", [{"i": i} for i in range(3)], user=alice)
    before = counts()

    with pytest.raises(SubmitRateExceeded):
        jobs.submit_many("echo", [{"i": i} for i in range(3)], user=alice)  # 3 + 3 > 5: none of them
    with pytest.raises(SubmitRateExceeded) as too_many:
        jobs.submit_many("echo", [{"i": i} for i in range(6)], user=alice)  # more than the whole budget

    assert counts() == before
    assert "more than" in str(too_many.value)
    assert len(jobs.submit_many("echo", [{}, {}], user=alice)) == 2  # the refused batches took nothing


def test_submit__redis_down_does_not_refuse_a_submission(own_redis, settings):
    settings.JOBS = {**settings.JOBS, "SUBMIT_RATE": "1/minute"}
    alice = make_user("alice")
    own_redis.stop()
    jobs.submit("echo", {}, user=alice)
    jobs.submit("echo", {}, user=alice)
    assert JobLog.objects.filter(status=JobStatus.PENDING).count() == 2  # the reconciler pushes them later


# --------------------------------------------------------------------------------------------------------------
# Payloads no database can store


UNSTORABLE = [
    ({"a": math.nan}, "finite"),
    ({"a": [1, {"b": math.inf}]}, "finite"),
    ({"a": -math.inf}, "finite"),
    ({"a": "nul \x00 char"}, "NUL"),
    ({"nested": {"nul \x00 key": 1}}, "NUL"),
    ({"a": ["\ud800"]}, "surrogate"),
]


@pytest.mark.parametrize(("payload", "reason"), UNSTORABLE)
def test_submit__unstorable_payload_is_invalid_and_writes_nothing(redis_url, transactional_db, payload, reason):
    before = counts()
    with pytest.raises(InvalidPayload) as submit_refused:
        jobs.submit("echo", payload)
    with pytest.raises(InvalidPayload) as replay_refused:
        services.get_or_submit("echo", payload, idempotency_key="k")
    with pytest.raises(InvalidPayload) as many_refused:
        jobs.submit_many("echo", [{"ok": 1}, payload])
    assert counts() == before
    assert reason in str(submit_refused.value) and reason in submit_refused.value.errors["payload"][0]
    assert reason in str(replay_refused.value)
    assert "Payload #1" in str(many_refused.value) and reason in str(many_refused.value)


# --------------------------------------------------------------------------------------------------------------
# Idempotency keys of deleted users


def test_delete_user__two_users_who_used_the_same_key_can_both_go(redis_url, transactional_db):
    alice, bob = make_user("alice"), make_user("bob")
    mine = jobs.submit("echo", {"who": "alice"}, user=alice, idempotency_key="shared")
    theirs = jobs.submit("echo", {"who": "bob"}, user=bob, idempotency_key="shared")

    alice.delete()
    bob.delete()  # an IntegrityError before: both rows would be ownerless with one key

    rows = JobLog.objects.filter(pk__in=[mine.pk, theirs.pk])
    assert sorted(rows.values_list("owner", "idempotency_key")) == [(None, None), (None, None)]
    assert sorted(rows.values_list("payload__who", flat=True)) == ["alice", "bob"]  # the history stays


def test_delete_user__a_system_submission_with_the_key_is_a_new_job(redis_url, transactional_db):
    alice = make_user("alice")
    hers = jobs.submit("echo", {"n": 1}, user=alice, idempotency_key="nightly")
    alice.delete()

    job, created = services.get_or_submit("echo", {"n": 1}, idempotency_key="nightly")

    assert created and job.pk != hers.pk and job.owner is None
    # ... and the system's key works as a key from then on.
    assert services.get_or_submit("echo", {"n": 1}, idempotency_key="nightly") == (job, False)
