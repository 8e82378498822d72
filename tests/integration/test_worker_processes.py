"""Behaviour that needs real worker processes: timeouts, limits across processes, stops, crashes, the supervisor."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from django.db import transaction
from redis import Redis

from jobs import cancel_job, submit, submit_many
from jobs.models import EventKind, JobLog, JobStatus
from jobs.reconciler import reconcile
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def recorded(redis_conn: Redis, key: str) -> list[str]:
    return [v.decode() for v in redis_conn.lrange(f"test:{key}", 0, -1)]


def fresh(job: JobLog) -> JobLog:
    return JobLog.objects.get(pk=job.pk)


def submit_committed(*args, **kwargs) -> JobLog:
    # A real transaction: the job is pushed on commit, as from a view.
    with transaction.atomic():
        return submit(*args, **kwargs)


def worker_processes(supervisor: psutil.Process) -> list[psutil.Process]:
    """The supervisor's worker processes (not the children an isolated job forks from them)."""
    return [child for child in supervisor.children() if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]


# One job at a time, or several per process: the guarantees hold either way.
MODES = {"one-at-a-time": ("--concurrency", "1"), "pool": ("--concurrency", "4")}


@pytest.mark.parametrize("type_name", ["slow", "isolated-slow"])
def test_timeout__attempts_fail_with_jobtimeout_and_the_worker_goes_on(type_name, workers, redis_conn):
    # "slow" sleeps in C on a thread, where the timeout's exception cannot land: its process ends and the
    # supervisor starts another. "isolated-slow" runs in a child of its process, which is killed.
    proc = workers.start()
    job = submit_committed(type_name, {"seconds": 30})
    wait_for(lambda: fresh(job).is_finished, timeout=40, what="the slow job to fail")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED, workers.output()
    assert job.error_type == "JobTimeout" and "timeout of 1 s" in job.error_message
    assert job.attempts == 2 and len(recorded(redis_conn, f"attempts:{job.id}")) == 2
    assert job.events.filter(kind=EventKind.RETRY_SCHEDULED, data__error_type="JobTimeout").count() == 1

    after = submit_committed("echo", {"still": "alive"})
    wait_for(lambda: fresh(after).status == JobStatus.SUCCEEDED, what="the next job")
    assert proc.poll() is None


@pytest.mark.parametrize("mode", MODES)
def test_rate_limit__never_exceeded_and_deferred_jobs_finish(mode, workers, redis_conn):
    for _ in range(2):
        workers.start(*MODES[mode], "--types", "throttled")
    jobs = [submit_committed("throttled", {}) for _ in range(10)]
    wait_for(lambda: all(fresh(j).is_finished for j in jobs), timeout=40, what="all throttled jobs")
    assert {fresh(j).status for j in jobs} == {JobStatus.SUCCEEDED}, workers.output()
    # Deferral spends no attempt.
    assert {fresh(j).attempts for j in jobs} == {1}
    starts = sorted(float(t) for t in recorded(redis_conn, "throttled"))
    assert len(starts) == 10
    # "3/s": no window of one second holds more than three starts (less a little for the handler's own delay).
    busiest = max(sum(1 for t in starts if s <= t < s + 0.95) for s in starts)
    assert busiest <= 3
    assert starts[-1] - starts[0] >= 2.0  # ten starts at three a second need at least three windows
    assert JobLog.objects.filter(events__kind=EventKind.DEFERRED).distinct().count() >= 1


@pytest.mark.parametrize("mode", MODES)
def test_concurrency__never_exceeded_with_more_processes_than_the_limit(mode, workers, redis_conn):
    workers.start(*MODES[mode], "--processes", "3", "--types", "capped")
    jobs = [submit_committed("capped", {"seconds": 0.4}) for _ in range(8)]
    wait_for(lambda: all(fresh(j).is_finished for j in jobs), timeout=40, what="all capped jobs")
    assert {fresh(j).status for j in jobs} == {JobStatus.SUCCEEDED}, workers.output()
    seen = [int(v) for v in recorded(redis_conn, "capped:seen")]
    assert len(seen) == 8
    assert max(seen) == 2  # the cap was reached, and never passed


@pytest.mark.parametrize("type_name", ["cooperative", "isolated-cooperative"])
def test_cancel__cooperative_handler_stops(type_name, workers, redis_conn):
    workers.start()
    job = submit_committed(type_name, {"steps": 400})
    wait_for(lambda: recorded(redis_conn, f"started:{job.id}"), what="the job to start")
    cancel_job(fresh(job))
    wait_for(lambda: fresh(job).is_finished, timeout=10, what="the job to stop")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED, workers.output()
    stopped_at = int(recorded(redis_conn, f"stopped:{job.id}")[0])
    assert 0 < stopped_at < 400 and job.result is None
    kinds = list(job.events.values_list("kind", flat=True))
    assert kinds[-2:] == [EventKind.CANCEL_REQUESTED, EventKind.CANCELED]


def test_cancel__a_handler_failing_on_its_way_out_is_canceled_not_retried(workers, redis_conn):
    workers.start()
    job = submit_committed("cancel-then-raise", {})
    wait_for(lambda: recorded(redis_conn, f"started:{job.id}"), what="the job to start")
    cancel_job(fresh(job))
    wait_for(lambda: fresh(job).is_finished, timeout=10, what="the job to stop")
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.CANCELED, 1), workers.output()
    assert not job.events.filter(kind=EventKind.RETRY_SCHEDULED).exists()


@pytest.mark.parametrize("type_name", ["stubborn", "isolated-stubborn"])
def test_cancel__handler_ignoring_cancel_is_interrupted(type_name, workers, redis_conn):
    proc = workers.start()
    job = submit_committed(type_name, {"seconds": 30})
    wait_for(lambda: recorded(redis_conn, f"started:{job.id}"), what="the job to start")
    pids_before = [p.pid for p in worker_processes(psutil.Process(proc.pid))]
    cancel_job(fresh(job))
    # CANCEL_GRACE is 1 s in the test settings: well before the 30 s the handler wants.
    wait_for(lambda: fresh(job).is_finished, timeout=10, what="the job to be interrupted")
    assert fresh(job).status == JobStatus.CANCELED, workers.output()
    after = submit_committed("echo", {})
    wait_for(lambda: fresh(after).status == JobStatus.SUCCEEDED, what="the next job")
    # Stopped inside its process: the same worker process serves on.
    assert [p.pid for p in worker_processes(psutil.Process(proc.pid))] == pids_before


def test_cancel__isolated_handler_blocked_in_c_has_its_child_killed(workers, redis_conn):
    proc = workers.start()
    job = submit_committed("isolated-sleeper", {"seconds": 60})
    child_pid = int(wait_for(lambda: recorded(redis_conn, f"started:{job.id}"), what="the job to start")[0])
    [process] = worker_processes(psutil.Process(proc.pid))
    assert child_pid != process.pid and child_pid in [c.pid for c in process.children()]
    cancel_job(fresh(job))
    # The cooperative grace, then the kill: no second grace is needed for a child.
    wait_for(lambda: fresh(job).is_finished, timeout=10, what="the child to be killed")
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.CANCELED, 1), workers.output()
    assert not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE
    assert worker_processes(psutil.Process(proc.pid)) == [process]


def test_cancel__thread_blocked_in_c_ends_its_process_and_the_others_go_back_unspent(workers, redis_conn):
    proc = workers.start("--concurrency", "2")
    with transaction.atomic():
        blocked = submit("sleeper", {"seconds": 60})
        neighbour = submit("cooperative", {"steps": 200})  # 10 s: still running when its process ends
    for job in (blocked, neighbour):
        wait_for(lambda j=job: recorded(redis_conn, f"started:{j.id}"), what="both jobs to start")
    [first_process] = worker_processes(psutil.Process(proc.pid))
    cancel_job(fresh(blocked))
    # Cooperative grace, the exception that cannot land, then the process ends: about two grace periods.
    wait_for(lambda: fresh(blocked).is_finished, timeout=15, what="the blocked job to be stopped")
    assert (fresh(blocked).status, fresh(blocked).attempts) == (JobStatus.CANCELED, 1), workers.output()
    wait_for(
        lambda: not first_process.is_running() or first_process.status() == psutil.STATUS_ZOMBIE,
        what="its process to end",
    )
    # Its neighbour went back to its queue without spending its attempt, and runs again in the new process.
    assert fresh(neighbour).events.filter(kind=EventKind.INTERRUPTED).count() == 1
    wait_for(lambda: fresh(neighbour).status == JobStatus.SUCCEEDED, timeout=30, what="the neighbour")
    assert fresh(neighbour).attempts == 1
    assert recorded(redis_conn, f"woke:{blocked.id}") == []  # the stuck handler never reached its end
    assert proc.poll() is None and len(worker_processes(psutil.Process(proc.pid))) == 1


def test_crash__killed_isolated_child_is_retried_and_succeeds(workers, redis_conn):
    proc = workers.start()
    job = submit_committed("crashy", {})
    child_pid = int(wait_for(lambda: recorded(redis_conn, f"pids:{job.id}"), what="the child to start")[0])
    assert child_pid not in (proc.pid, *[p.pid for p in worker_processes(psutil.Process(proc.pid))])
    os.kill(child_pid, signal.SIGKILL)
    wait_for(lambda: fresh(job).is_finished, timeout=30, what="the retried job")
    job.refresh_from_db()
    assert (job.status, job.result, job.attempts) == (JobStatus.SUCCEEDED, "survived on attempt 2", 2), workers.output()
    lost = job.events.get(kind=EventKind.RETRY_SCHEDULED)
    assert lost.data["error_type"] == "WorkerLost" and "killed by signal 9" in lost.message
    assert proc.poll() is None


def test_isolated__progress_and_failed_items_travel_from_the_child(workers):
    proc = workers.start()
    job = submit_committed("isolated-echo", {"bad_items": ["row 1", "row 2"]})
    wait_for(lambda: fresh(job).is_finished, what="the isolated job")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, workers.output()
    [process] = worker_processes(psutil.Process(proc.pid))
    assert job.result["pid"] not in (proc.pid, process.pid)
    assert (job.progress_percent, job.progress_stage, job.progress_data["pid"]) == (100, "child", job.result["pid"])
    assert job.failed_items_count == 2 and [f["item"] for f in job.failed_items] == ["row 1", "row 2"]

    failing = submit_committed("isolated-echo", {"fail": "no good"})
    wait_for(lambda: fresh(failing).is_finished, what="the failing isolated job")
    failing.refresh_from_db()
    assert (failing.status, failing.error_type, failing.error_message, failing.attempts) == (
        JobStatus.FAILED,
        "PermanentError",
        "no good",
        1,
    )
    assert 'raise PermanentError(payload["fail"])' in failing.traceback


def test_isolated__a_quick_child_finishes_while_another_runs_on_in_its_process(workers, redis_conn):
    workers.start("--concurrency", "4")
    with transaction.atomic():
        long = submit("isolated-sleeper", {"seconds": 60})
    wait_for(lambda: recorded(redis_conn, f"started:{long.id}"), what="the long child to start")
    # Each child holds only its own pipe: a quick one's end is seen while the long one still runs.
    quick = [submit_committed("isolated-echo", {"n": n}) for n in range(6)]
    wait_for(lambda: all(fresh(job).is_finished for job in quick), timeout=20, what="the quick children")
    assert {fresh(job).status for job in quick} == {JobStatus.SUCCEEDED}, workers.output()
    assert len({fresh(job).result["pid"] for job in quick}) == 6
    assert fresh(long).status == JobStatus.RUNNING


@pytest.mark.parametrize("mode", MODES)
def test_sigterm__job_finishing_within_grace_completes(mode, workers, redis_conn):
    proc = workers.start(*MODES[mode])
    job = submit_committed("cooperative", {"steps": 20})  # about 1 s of work
    wait_for(lambda: recorded(redis_conn, f"started:{job.id}"), what="the job to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0  # the worker exits once the job is done
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)


@pytest.mark.parametrize("type_name", ["stubborn", "isolated-stubborn", "sleeper"])
def test_sigterm__job_outliving_grace_goes_back_to_queue_and_runs_later(type_name, workers, redis_conn):
    # SHUTDOWN_GRACE is 30 s by default; override it for this worker only.
    workers.extra_env = {"JOBS_TEST_SHUTDOWN_GRACE": "1"}
    proc = workers.start()
    job = submit_committed(type_name, {"seconds": 4})
    wait_for(lambda: recorded(redis_conn, f"started:{job.id}"), what="the job to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED, workers.output()
    assert job.attempts == 0  # the interrupted attempt is not counted as a failure
    assert job.events.filter(kind=EventKind.INTERRUPTED).count() == 1
    assert not job.events.filter(kind__in=[EventKind.FAILED, EventKind.RETRY_SCHEDULED]).exists()

    workers.extra_env = {}
    workers.start()
    wait_for(lambda: fresh(job).status == JobStatus.SUCCEEDED, timeout=30, what="the requeued job")
    assert fresh(job).attempts == 1


def test_sigterm__an_idle_worker_exits_at_once(workers):
    proc = workers.start("--processes", "2")
    wait_for(lambda: len(worker_processes(psutil.Process(proc.pid))) == 2, what="two worker processes")
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert time.monotonic() - started < 3  # no listener or timer left to wait out


def test_supervisor__restarts_a_killed_worker_process_and_loses_no_job(workers):
    proc = workers.start("--processes", "2", "--concurrency", "2")
    wait_for(lambda: len(worker_processes(psutil.Process(proc.pid))) == 2, what="two worker processes")
    with transaction.atomic():
        jobs = [submit("cooperative", {"steps": 400}) for _ in range(2)]  # 20 s each: still running when killed
    wait_for(lambda: all(fresh(job).status == JobStatus.RUNNING for job in jobs), what="both jobs running")
    victims = {fresh(job).worker_name.rsplit(".", 1)[1] for job in jobs}
    for pid in victims:
        os.kill(int(pid), signal.SIGKILL)
    wait_for(
        lambda: (
            {p.pid for p in worker_processes(psutil.Process(proc.pid))}.isdisjoint(map(int, victims))
            and len(worker_processes(psutil.Process(proc.pid))) == 2
        ),
        timeout=15,
        what="fresh worker processes",
    )
    time.sleep(1.6)  # the liveness keys (3 x 0.5 s beats in the test settings) lapse
    for job in jobs:  # shorter now, so the retries finish soon
        JobLog.objects.filter(pk=job.pk).update(payload={"steps": 10})
    report = reconcile(grace=0, confirm_after=0.6)
    assert sorted(report.recovered_running) == sorted(str(job.id) for job in jobs)
    wait_for(lambda: all(fresh(job).status == JobStatus.SUCCEEDED for job in jobs), timeout=30, what="the retries")
    assert {fresh(job).attempts for job in jobs} == {2} and proc.poll() is None


def test_supervisor__killed_outright_its_worker_processes_stop_too(workers):
    proc = workers.start("--processes", "2")
    wait_for(lambda: len(worker_processes(psutil.Process(proc.pid))) == 2, what="two worker processes")
    children = worker_processes(psutil.Process(proc.pid))
    os.kill(proc.pid, signal.SIGKILL)  # the supervisor alone: no chance to stop its children
    proc.wait(10)
    # Orphans would go on claiming jobs nobody supervises; they notice and stop.
    wait_for(
        lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
        timeout=15,
        what="the orphaned worker processes to stop",
    )


def test_jobs_worker__defaults_to_one_process_per_cpu(workers):
    proc = workers.start(one_process=False)
    wait_for(lambda: len(worker_processes(psutil.Process(proc.pid))) == os.cpu_count(), what="the processes")
    jobs = submit_many("echo", [{"n": i} for i in range(40)])
    wait_for(lambda: all(fresh(job).status == JobStatus.SUCCEEDED for job in jobs), what="every job")
    assert len({fresh(job).worker_name for job in jobs}) <= os.cpu_count()


def test_sqlite_and_postgresql__many_writers_at_once_lose_nothing(workers):
    # Two processes of eight slots, each starting and finishing batches while the others do: on SQLite every
    # write waits its turn (WAL, IMMEDIATE transactions, a busy timeout), and none fails.
    workers.start("--processes", "2", "--concurrency", "8", "--queues", "echo")
    jobs = submit_many("echo", [{"n": i} for i in range(300)])
    wait_for(lambda: JobLog.objects.filter(status=JobStatus.SUCCEEDED).count() == 300, timeout=90, what="300 jobs")
    rows = JobLog.objects.filter(pk__in=[job.pk for job in jobs])
    assert {row.attempts for row in rows} == {1}
    assert "database is locked" not in workers.output()
