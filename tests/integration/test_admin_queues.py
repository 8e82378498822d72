"""The admin's queues page: counts, workers, charts, and pause/resume/requeue-failed/empty taking effect."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobs import monitoring, submit
from jobs.models import EventKind, JobEvent, JobLog, JobStatus
from jobs.monitoring import count_by_priority, get_finished_series, get_timings, list_queue_stats
from jobs.services import empty_queue
from tests.conftest import wait_for
from tests.factories import make_job, make_user
from tests.integration.admin_support import failed_job, fresh, grant, login, messages_of

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "admin:jobs_queue_changelist"


def action_url(queue: str, action: str) -> str:
    return reverse("admin:jobs_queue_action", args=[queue, action])


def stats_of(name: str) -> dict:
    return next(s for s in list_queue_stats() if s["name"] == name)


@pytest.fixture
def root():
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def viewer():
    return grant(make_user("viewer", is_staff=True), "view_joblog")


def csrf_client(user, page: str) -> tuple[Client, str]:
    """A client that enforces CSRF like a browser, with the token the page gave it."""
    client = login(user, csrf_checks=True)
    assert client.get(page).status_code == 200
    return client, client.cookies["csrftoken"].value


def test_queues_page__counts_per_queue_and_priority_and_workers(root, workers):
    with transaction.atomic():
        done = [submit("echo", {"n": i}) for i in range(3)]
    workers.start("--types", "echo", "--name", "page-worker")
    wait_for(lambda: all(fresh(j).status == JobStatus.SUCCEEDED for j in done), what="the echo jobs")
    with transaction.atomic():
        submit("echo", {"n": 9}, priority="high", delay=600)
    failed_job(priority="low")
    page = login(root).get(reverse(PAGE))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-count="echo:normal:succeeded"><a href="/admin/jobs/joblog/?queue=echo&amp;priority=normal' in html
    assert ">3</a>" in html.split('data-count="echo:normal:succeeded">')[1][:200]
    assert ">1</a>" in html.split('data-count="echo:high:scheduled">')[1][:200]
    assert ">1</a>" in html.split('data-count="permanent:low:failed">')[1][:200]
    assert ">3</a>" in html.split('data-count="echo:all:succeeded">')[1][:200]
    # The worker: name, host, pid, state and heartbeat.
    workers_table = html.split("<tbody data-workers>")[1].split("</tbody>")[0]
    assert "page-worker" in workers_table and "ago</time>" in workers_table
    (worker,) = [w for w in stats_of("echo")["workers"] if w["name"].startswith("page-worker.")]
    assert str(worker["pid"]) in workers_table and worker["host"] in workers_table
    # Charts: three jobs finished in the last hour, drawn from local assets only.
    assert '"succeeded": [' in html and "jobs/admin/dashboard.js" in html
    assert 'data-total="hour-succeeded">3<' in html
    for asset in ("jobs/admin/dashboard.js", "jobs/admin/jobs.css"):
        assert f'src="/static/{asset}"' in html or f'href="/static/{asset}"' in html


def test_queues_page__current_job_of_a_busy_worker(root, workers):
    workers.start("--types", "stubborn", "--name", "busy-worker")
    with transaction.atomic():
        job = submit("stubborn", {"seconds": 30})
    wait_for(lambda: fresh(job).status == JobStatus.RUNNING, what="the job to start")
    html = wait_for(
        lambda: (h := login(root).get(reverse(PAGE)).content.decode()) and job.short_id in h and h,
        what="the worker's current job on the page",
    )
    assert reverse("admin:jobs_joblog_change", args=[job.pk]) in html
    assert "jobs-badge--worker-busy" in html


def test_queues_page__filter_by_queue(root, redis_url):
    make_job(job_type="greet", queue="greet", status=JobStatus.QUEUED)
    client = login(root)
    html = client.get(reverse(PAGE), {"queue": "greet"}).content.decode()
    assert 'id="queue-greet"' in html and 'id="queue-echo"' not in html
    assert client.get(reverse(PAGE), {"queue": "nope"}).status_code == 404


def test_queues_data__the_pages_json(root, redis_url):
    failed_job()
    data = login(root).get(reverse("admin:jobs_queue_data")).json()
    assert data["type"] == "queues" and data["at"]
    permanent = next(q for q in data["queues"] if q["name"] == "permanent")
    assert permanent["counts"]["failed"] == 1 and permanent["paused"] is False
    assert set(permanent) >= {"name", "job_types", "paused", "counts", "workers", "throughput"}
    assert data["priorities"]["permanent"]["normal"]["failed"] == 1
    assert len(data["series"]["hour"]["failed"]) == 60 and len(data["series"]["day"]["failed"]) == 24
    assert sum(data["series"]["hour"]["failed"]) == 1


def test_queues_page__viewers_see_no_buttons_and_cannot_post(viewer, redis_url):
    client = login(viewer)
    html = client.get(reverse(PAGE)).content.decode()
    assert 'id="queue-echo"' in html and "Pause</button>" not in html and "Empty…" not in html
    for action in ("pause", "resume", "requeue-failed", "empty"):
        assert client.post(action_url("echo", action)).status_code == 403
        assert client.get(action_url("echo", action)).status_code == 403
    assert stats_of("echo")["paused"] is False


def test_queue_actions__unknown_queue_or_action_is_404(root, redis_url):
    client = login(root)
    assert client.post(action_url("nope", "pause")).status_code == 404
    assert client.post(action_url("echo", "explode")).status_code == 404


@pytest.mark.parametrize("action", ["pause", "resume", "requeue-failed", "empty"])
def test_queue_actions__post_without_csrf_token_is_refused(root, redis_url, action):
    with transaction.atomic():
        submit("echo", {})
    client, _token = csrf_client(root, reverse(PAGE))
    assert client.post(action_url("echo", action)).status_code == 403
    echo = stats_of("echo")
    assert echo["paused"] is False and echo["counts"]["queued"] == 1


def test_pause_and_resume__posts_that_workers_obey(root, workers):
    workers.start("--types", "echo")
    wait_for(lambda: stats_of("echo")["workers"], what="the worker")
    client, token = csrf_client(root, reverse(PAGE))
    response = client.post(action_url("echo", "pause"), {"csrfmiddlewaretoken": token}, follow=True)
    assert "Paused queue “echo”." in messages_of(response)
    assert stats_of("echo")["paused"] is True
    page = response.content.decode()
    assert "data-paused-badge>" in page.split('id="queue-echo"')[1][:600]
    with transaction.atomic():
        held = submit("echo", {})
    time.sleep(2.5)  # more than the worker's look-again interval
    assert fresh(held).status == JobStatus.QUEUED

    response = client.post(action_url("echo", "resume"), {"csrfmiddlewaretoken": token}, follow=True)
    assert "Resumed queue “echo”." in messages_of(response)
    wait_for(lambda: fresh(held).status == JobStatus.SUCCEEDED, what="the job after resuming")


def test_requeue_failed__confirmation_then_post(root, redis_url, drain, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        failed = [submit("permanent", {}) for _ in range(2)]
    drain(lambda: all(fresh(j).status == JobStatus.FAILED for j in failed))
    client, token = csrf_client(root, reverse(PAGE))
    confirm = client.get(action_url("permanent", "requeue-failed"))
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert "Failed jobs now: 2." in html and "Yes, I’m sure" in html and 'name="csrfmiddlewaretoken"' in html
    assert {fresh(j).status for j in failed} == {JobStatus.FAILED}  # the GET changed nothing
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(action_url("permanent", "requeue-failed"), {"csrfmiddlewaretoken": token}, follow=True)
    assert "Requeued 2 failed jobs of “permanent”." in messages_of(response)
    assert {fresh(j).status for j in failed} == {JobStatus.QUEUED}
    assert stats_of("permanent")["waiting_in_redis"]["normal"] == 2


def test_empty__cancels_waiting_jobs_and_takes_them_out_of_redis(root, redis_url, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        queued = [submit("echo", {"n": i}, priority=p) for i, p in enumerate(["high", "normal", "low"])]
        later = submit("echo", {}, delay=600)
        other = submit("greet", {"name": "Ada"})
    running = make_job(status=JobStatus.RUNNING)
    assert sum(stats_of("echo")["waiting_in_redis"].values()) == 3
    client, token = csrf_client(root, reverse(PAGE))
    assert "Waiting jobs now: 4." in client.get(action_url("echo", "empty")).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(action_url("echo", "empty"), {"csrfmiddlewaretoken": token}, follow=True)
    assert "Canceled 4 waiting jobs of “echo”." in messages_of(response)
    assert {fresh(j).status for j in [*queued, later]} == {JobStatus.CANCELED}
    assert fresh(running).status == JobStatus.RUNNING and fresh(other).status == JobStatus.QUEUED
    assert sum(stats_of("echo")["waiting_in_redis"].values()) == 0
    assert stats_of("greet")["waiting_in_redis"]["normal"] == 1
    event = JobEvent.objects.get(job=later, kind=EventKind.CANCELED)
    assert event.data == {"by": root.pk} and event.message == "The queue was emptied."


def test_empty_queue__nothing_waiting_is_zero(redis_url):
    assert empty_queue("echo") == 0


def test_finished_series__buckets_per_minute_and_hour():
    now = datetime(2026, 5, 4, 12, 30, 20, tzinfo=UTC)

    def finished(status: str, ago: timedelta) -> None:
        job = make_job(status=status)
        JobLog.objects.filter(pk=job.pk).update(finished_at=now - ago)

    finished(JobStatus.SUCCEEDED, timedelta(seconds=5))  # this minute: the last bucket
    finished(JobStatus.SUCCEEDED, timedelta(minutes=1))
    finished(JobStatus.FAILED, timedelta(minutes=59))  # the first bucket of the hour
    finished(JobStatus.FAILED, timedelta(hours=2))  # only in the day chart
    finished(JobStatus.SUCCEEDED, timedelta(days=2))  # in neither
    finished(JobStatus.CANCELED, timedelta(seconds=5))  # neither throughput nor a failure
    series = get_finished_series(["echo"], now=now)
    hour, day = series["hour"], series["day"]
    assert hour["start"] == "2026-05-04T11:31:00+00:00" and hour["step_seconds"] == 60
    assert hour["succeeded"][-1] == 1 and hour["succeeded"][-2] == 1 and sum(hour["succeeded"]) == 2
    assert hour["failed"][0] == 1 and sum(hour["failed"]) == 1
    assert day["start"] == "2026-05-03T13:00:00+00:00" and day["step_seconds"] == 3600
    assert day["succeeded"][-1] == 2 and day["failed"][-2] == 1 and day["failed"][-3] == 1
    assert sum(day["succeeded"]) == 2 and sum(day["failed"]) == 2


def test_list_queue_stats__from_priority_counts_matches_counting_again(redis_url):
    make_job(status=JobStatus.QUEUED, priority="high")
    make_job(status=JobStatus.SUCCEEDED)
    failed_job(priority="low")
    make_job(job_type="gone", queue="gone", status=JobStatus.FAILED)  # a queue no type serves any more
    names = [s["name"] for s in list_queue_stats()]
    by_priority = count_by_priority(names)
    assert by_priority["echo"]["high"]["queued"] == 1 and by_priority["permanent"]["low"]["failed"] == 1
    assert [s["counts"] for s in list_queue_stats(by_priority=by_priority)] == [s["counts"] for s in list_queue_stats()]


# -------------------------------------------------------------------------------------------------------------
# One compact row per queue; details on demand


def test_queues_page__one_compact_row_per_queue_with_details_on_demand(root, redis_url):
    for status in (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.QUEUED):
        make_job(status=status)
    make_job(status=JobStatus.RUNNING)
    failed_job(priority="low")
    client = login(root)
    html = client.get(reverse(PAGE)).content.decode()
    assert html.count(' data-queue="') == len(list_queue_stats())  # one row per queue
    echo = html.split('id="queue-echo"')[1].split("</tr>")[0]
    waiting_link = "/admin/jobs/joblog/?queue=echo&amp;status__in=pending%2Cqueued%2Cscheduled"
    assert f'data-sum="echo:waiting"><a href="{waiting_link}">4</a>' in echo
    assert 'data-sum="echo:running"><a href="/admin/jobs/joblog/?queue=echo&amp;status__exact=running">1</a>' in echo
    assert 'data-sum="echo:failed"><span class="jobs-zero">0</span>' in echo
    assert '<span data-fact="throughput-minute">0</span>' in echo and "Pause</button>" in echo
    assert ">1</a>" in html.split('id="queue-permanent"')[1].split('data-sum="permanent:failed">')[1][:150]
    # The details (per priority and status, the queue's workers) are in the page, hidden until asked for.
    details = html.split('<tr class="jobs-queue-details" id="queue-echo-details"')[1].split("</table>")[0]
    assert details.startswith(" hidden>") and 'data-count="echo:normal:queued"><a' in details
    # The waiting link's filter works in the job list: the four waiting jobs of the queue, no others.
    waiting = client.get("/admin/jobs/joblog/", {"queue": "echo", "status__in": "pending,queued,scheduled"})
    assert waiting.status_code == 200 and waiting.context["cl"].result_count == 4
    # A queue of its own (?queue=) shows its details open, and the worker list open.
    alone = client.get(reverse(PAGE), {"queue": "echo"}).content.decode()
    assert '<tr class="jobs-queue-details" id="queue-echo-details">' in alone
    assert '<details class="module jobs-workers" open>' in alone
    assert '<details class="module jobs-workers">' in html


def test_queues_page__viewers_see_the_rows_without_actions(viewer, redis_url):
    make_job(status=JobStatus.QUEUED)
    html = login(viewer).get(reverse(PAGE)).content.decode()
    echo = html.split('id="queue-echo"')[1].split("</tr>")[0]
    assert 'data-sum="echo:waiting"><a' in echo
    assert "<form" not in echo and "Requeue failed" not in echo and "Actions</th>" not in html


# -------------------------------------------------------------------------------------------------------------
# Wait and run times


NOW = datetime(2026, 5, 4, 12, 30, 20, tzinfo=UTC)


def finished_job(
    *,
    wait: float,
    run: float,
    ago: timedelta,
    job_type: str = "echo",
    status: str = JobStatus.SUCCEEDED,
    **fields,
) -> JobLog:
    finished = NOW - ago
    started = finished - timedelta(seconds=run)
    job = make_job(job_type=job_type, queue=job_type, status=status, **fields)
    JobLog.objects.filter(pk=job.pk).update(
        created_at=started - timedelta(seconds=wait + 100),
        enqueued_at=started - timedelta(seconds=wait),
        started_at=started,
        finished_at=finished,
    )
    return job


def test_timings__wait_and_run_percentiles_per_type_and_day():
    for i in range(1, 21):  # echo: waits 1..20 s, runs 0.1..2.0 s, all in the last hour
        finished_job(wait=i, run=i / 10, ago=timedelta(minutes=i))
    finished_job(wait=3, run=5, ago=timedelta(minutes=3), job_type="greet", status=JobStatus.FAILED)
    finished_job(wait=999, run=999, ago=timedelta(minutes=3), status=JobStatus.CANCELED)  # neither
    finished_job(wait=500, run=500, ago=timedelta(days=2))  # only in the week
    never_ran = make_job(status=JobStatus.FAILED)  # given up before it started: no times
    JobLog.objects.filter(pk=never_ran.pk).update(finished_at=NOW - timedelta(minutes=5))
    # A delayed job waits from its run_at, not from when it was submitted.
    delayed = finished_job(wait=7200, run=1, ago=timedelta(minutes=30))
    delayed.refresh_from_db()
    JobLog.objects.filter(pk=delayed.pk).update(run_at=delayed.started_at - timedelta(seconds=2))

    timings = get_timings(["echo", "greet"], now=NOW)
    echo, greet = timings["per_type"]
    assert (echo["label"], echo["sampled"]) == ("echo", 21)
    assert (echo["wait_p50"], echo["wait_p95"]) == (10.0, 19.0)  # 1..20 and the delayed job's 2 s
    assert (echo["run_p50"], echo["run_p95"]) == (1.0, 1.9)
    assert greet == {"label": "greet", "sampled": 1, "wait_p50": 3.0, "wait_p95": 3.0, "run_p50": 5.0, "run_p95": 5.0}
    days = timings["per_day"]
    assert [d["label"] for d in days] == [f"2026-04-{n}" for n in range(28, 31)] + [
        f"2026-05-0{n}" for n in range(1, 5)
    ]
    assert days[-1]["sampled"] == 22 and days[-3]["sampled"] == 1 and days[-3]["run_p95"] == 500.0
    assert sum(d["sampled"] for d in days) == 23 and days[0]["wait_p50"] is None
    week = timings["week"]
    assert week["start"] == "2026-04-28T00:00:00+00:00" and week["step_seconds"] == 86400
    assert week["succeeded"] == [0, 0, 0, 0, 1, 0, 21] and week["failed"] == [0, 0, 0, 0, 0, 0, 2]


def test_timings__a_bounded_sample_of_the_newest_jobs_per_queue(monkeypatch):
    monkeypatch.setattr(monitoring, "TIMING_SAMPLE_PER_QUEUE", 5)
    monkeypatch.setattr(monitoring, "TIMING_SAMPLE_PER_QUEUE_DAY", 3)
    for i in range(1, 11):  # the newest finished jobs run the shortest
        finished_job(wait=0, run=i, ago=timedelta(minutes=i))
    with CaptureQueriesContext(connection) as queries:
        timings = get_timings(["echo"], now=NOW)
    (echo,) = timings["per_type"]
    assert echo["sampled"] == 5 and echo["run_p95"] == 5.0  # the newest five: 1..5 s
    assert timings["per_day"][-1]["sampled"] == 3 and timings["per_day"][-1]["run_p95"] == 3.0
    assert timings["week"]["succeeded"][-1] == 10  # the counts are not sampled
    samples = [q["sql"] for q in queries.captured_queries if '"started_at"' in q["sql"]]
    assert len(samples) == 1 + 7 and all("LIMIT" in sql for sql in samples)


def test_queues_page__wait_and_run_times_and_the_week(root, redis_url):
    now = timezone.now()
    for seconds in (1, 2, 3, 4):
        job = make_job(status=JobStatus.SUCCEEDED)
        JobLog.objects.filter(pk=job.pk).update(
            enqueued_at=now - timedelta(seconds=60),
            started_at=now - timedelta(seconds=60 - seconds / 10),
            finished_at=now - timedelta(seconds=60 - seconds / 10 - seconds),
        )
    page = login(root).get(reverse(PAGE))
    html = page.content.decode()
    per_type = html.split('data-timings="per-type"')[1].split("</section>")[0]
    row = per_type.split('data-timing-row="echo"')[1].split("</tr>")[0]
    assert 'data-timing="wait-p50">200 ms<' in row and 'data-timing="run-p95">4.0 s<' in row
    assert 'data-timing="run-p50">2.0 s<' in row
    per_day = html.split('data-timings="per-day"')[1].split("</section>")[0]
    assert per_day.count("data-timing-row=") == 7 and 'data-timing="run-p95">4.0 s<' in per_day
    series = page.context["series"]
    assert series["week"]["succeeded"][-1] == 4 and len(series["week"]["failed"]) == 7
    assert 'data-total="week-succeeded">4<' in html and 'data-chart="week"' in html
    # The polled JSON stays as cheap as before: no week, no percentiles.
    data = login(root).get(reverse("admin:jobs_queue_data")).json()
    assert set(data["series"]) == {"hour", "day"} and "timings" not in data
