"""The jobs admin: who may see and steer what, every action and button, and the list's cost on a growing table."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobs import submit
from jobs.admin.jobs import EstimatedCountPaginator, id_range
from jobs.models import EventKind, JobEvent, JobLog, JobSchedule, JobStatus
from tests.factories import make_job, make_user
from tests.integration.admin_support import failed_job, fresh, grant, login, messages_of

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:jobs_joblog_changelist"


@pytest.fixture
def root():
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def viewer():
    """Staff who may look at jobs and schedules, but not change them."""
    return grant(make_user("viewer", is_staff=True), "view_joblog", "view_jobschedule")


@pytest.fixture
def operator():
    """Staff who may steer jobs (the "change" permission of jobs), but not delete them."""
    return grant(make_user("operator", is_staff=True), "view_joblog", "change_joblog")


@pytest.fixture
def civilian():
    return make_user("civilian")


# -------------------------------------------------------------------------------------------------------------
# Who gets in


def test_admin__non_staff_gets_nothing_but_the_login_page(civilian, root):
    job = failed_job()
    schedule = JobSchedule.objects.create(name="nightly", job_type="echo", cron="0 3 * * *")
    client = login(civilian)
    urls = [
        reverse(CHANGELIST),
        reverse("admin:jobs_joblog_change", args=[job.pk]),
        reverse("admin:jobs_joblog_data", args=[job.pk]),
        reverse("admin:jobs_jobschedule_changelist"),
        reverse("admin:jobs_jobschedule_change", args=[schedule.pk]),
        reverse("admin:jobs_queue_changelist"),
        reverse("admin:jobs_queue_data"),
        reverse("admin:jobs_queue_action", args=["echo", "empty"]),
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url
    posts = [
        reverse("admin:jobs_joblog_retry", args=[job.pk]),
        reverse("admin:jobs_joblog_cancel", args=[job.pk]),
        reverse("admin:jobs_queue_action", args=["echo", "pause"]),
        reverse("admin:jobs_jobschedule_run", args=[schedule.pk]),
    ]
    for url in posts:
        response = client.post(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login")), url
    response = client.post(reverse(CHANGELIST), {"action": "retry", "_selected_action": [str(job.pk)]})
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    assert fresh(job).status == JobStatus.FAILED
    assert JobSchedule.objects.get(pk=schedule.pk).last_job is None


def test_admin__staff_without_permissions_sees_no_jobs():
    nobody = make_user("nobody", is_staff=True)
    client = login(nobody)
    assert client.get(reverse(CHANGELIST)).status_code == 403
    assert client.get(reverse("admin:jobs_queue_changelist")).status_code == 403
    assert client.get(reverse("admin:jobs_queue_data")).status_code == 403
    index = client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:jobs_queue_changelist") not in index


def test_admin_index__links_the_queues_page(viewer):
    index = login(viewer).get(reverse("admin:index")).content.decode()
    assert f'href="{reverse("admin:jobs_queue_changelist")}"' in index
    assert f'href="{reverse(CHANGELIST)}"' in index


# -------------------------------------------------------------------------------------------------------------
# The job list


def test_changelist__columns(root):
    owner = make_user("alice")
    job = failed_job(owner=owner, progress_percent=40, progress_message="halfway")
    page = login(root).get(reverse(CHANGELIST))
    assert page.status_code == 200
    html = page.content.decode()
    assert job.short_id in html
    assert 'class="jobs-badge jobs-badge--failed"' in html
    assert 'aria-valuenow="40"' in html and "jobs-progress--failed" in html
    assert ">alice<" in html
    assert "3.0 s" in html  # the duration, started to finished
    assert "jobs/admin/jobs.css" in html and "jobs/admin/live.js" in html
    assert "Queues dashboard" in html


def test_changelist__is_read_only(root):
    job = failed_job()
    client = login(root)
    assert client.get(reverse("admin:jobs_joblog_add")).status_code == 403
    response = client.post(reverse("admin:jobs_joblog_change", args=[job.pk]), {"job_type": "echo"})
    assert response.status_code == 403
    assert fresh(job).job_type == "permanent"


def test_changelist__filters(root):
    old = make_job(status=JobStatus.SUCCEEDED)
    JobLog.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40))
    failed = failed_job()
    greet = make_job(job_type="greet", queue="greet", status=JobStatus.QUEUED, priority="high")
    client = login(root)

    def listed(**params) -> set:
        response = client.get(reverse(CHANGELIST), params)
        assert response.status_code == 200, params
        return {job.pk for job in response.context["cl"].result_list}

    assert listed() == {old.pk, failed.pk, greet.pk}
    assert listed(status__exact="failed") == {failed.pk}
    assert listed(job_type="greet") == {greet.pk}
    assert listed(queue="permanent") == {failed.pk}
    assert listed(priority__exact="high") == {greet.pk}
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    today = {"created_at__gte": str(midnight), "created_at__lt": str(midnight + timedelta(days=1))}
    assert listed(**today) == {failed.pk, greet.pk}


def test_changelist__search_by_id_owner_and_error(root):
    alice = make_user("alice")
    by_alice = make_job(owner=alice)
    failed = failed_job()
    other = make_job()
    client = login(root)

    def found(term: str) -> set:
        return {job.pk for job in client.get(reverse(CHANGELIST), {"q": term}).context["cl"].result_list}

    assert found(str(failed.pk)) == {failed.pk}
    assert found(failed.short_id) == {failed.pk}
    assert found(str(failed.pk)[:13].upper()) == {failed.pk}
    assert found("ALICE") == {by_alice.pk}
    assert found("never work") == {failed.pk}
    assert found("PermanentError") == {failed.pk}
    assert found("nothing like this") == set()
    assert found(str(other.pk)[:8]) == {other.pk}


def test_id_range__only_hex_prefixes():
    assert id_range("abc") is None  # too short to mean an id
    assert id_range("not-an-id") is None
    low, high = id_range("0123abcd-ef")
    assert str(low) == "0123abcd-ef00-0000-0000-000000000000"
    assert str(high) == "0123abcd-efff-ffff-ffff-ffffffffffff"


def test_changelist__queries_do_not_grow_with_rows(root):
    client = login(root)
    owners = [make_user(f"owner{i}") for i in range(3)]

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse(CHANGELIST)).status_code == 200
        return len(captured)

    for i in range(3):
        failed_job(owner=owners[i % 3])
    few = queries()
    for i in range(30):
        make_job(owner=owners[i % 3], status=JobStatus.SUCCEEDED)
    assert queries() == few


def test_paginator__counts_exactly_up_to_the_limit_then_estimates():
    for _ in range(7):
        make_job()

    class Small(EstimatedCountPaginator):
        exact_limit = 5

    paginator = Small(JobLog.objects.all(), 2)
    assert paginator.count >= 6
    if connection.vendor == "postgresql":
        assert paginator.is_estimate and "about" in paginator.count_display
    else:
        assert paginator.count == 7 and not paginator.is_estimate
    exact = EstimatedCountPaginator(JobLog.objects.all(), 2)
    assert exact.count == 7 and not exact.is_estimate and exact.count_display == "7"


# -------------------------------------------------------------------------------------------------------------
# Actions on the list


def run_action(client: Client, action: str, *jobs: JobLog, **extra):
    data = {"action": action, "_selected_action": [str(job.pk) for job in jobs], **extra}
    return client.post(reverse(CHANGELIST), data, follow=True)


def test_retry_action__superuser_retries_and_the_job_succeeds(
    root, redis_url, drain, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = submit("flaky", {"succeed_on": 4})  # fails attempts 1 to 3: all of its budget
    drain(lambda: fresh(job).status == JobStatus.FAILED)
    client = login(root)
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(client, "retry", job)
    assert "Retried 1 job." in messages_of(response)
    assert fresh(job).status == JobStatus.QUEUED
    drain(lambda: fresh(job).status == JobStatus.SUCCEEDED)
    done = fresh(job)
    assert done.attempts == 4 and done.result == "recovered"
    assert JobEvent.objects.filter(job=job, kind=EventKind.RETRIED, data__by=root.pk).exists()


def test_retry_action__reports_jobs_it_cannot_retry(root, redis_url, django_capture_on_commit_callbacks):
    failed = failed_job()
    running = make_job(status=JobStatus.RUNNING)
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(login(root), "retry", failed, running)
    shown = messages_of(response)
    assert "Retried 1 job." in shown
    assert any(m.startswith("1 job could not be retried") and running.short_id in m for m in shown)
    assert fresh(failed).status == JobStatus.QUEUED and fresh(running).status == JobStatus.RUNNING


def test_cancel_action__cancels_waiting_and_asks_running_to_stop(root, redis_url, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        waiting = submit("echo", {})
    running = make_job(status=JobStatus.RUNNING, attempts=1)
    done = make_job(status=JobStatus.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(login(root), "cancel", waiting, running, done)
    shown = messages_of(response)
    assert "Canceled 2 jobs." in shown
    assert any("could not be canceled" in m and done.short_id in m for m in shown)
    assert fresh(waiting).status == JobStatus.CANCELED
    assert fresh(running).status == JobStatus.RUNNING and fresh(running).cancel_requested_at is not None


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_steering_actions__refused_without_change_permission(viewer, redis_url, action):
    failed = failed_job()
    queued = make_job(status=JobStatus.QUEUED)
    client = login(viewer)
    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    assert page.context["action_form"] is None  # no action at all is offered
    assert 'name="action"' not in page.content.decode()
    # A hand-made POST is refused the same way: for this user the action does not exist.
    response = run_action(client, action, failed, queued)
    assert response.status_code == 200 and not any("job" in m for m in messages_of(response))
    assert fresh(failed).status == JobStatus.FAILED and fresh(queued).status == JobStatus.QUEUED
    assert not JobEvent.objects.exists()


def test_steering_actions__offered_to_operators(operator, redis_url, django_capture_on_commit_callbacks):
    failed = failed_job()
    client = login(operator)
    offered = [name for name, _label in client.get(reverse(CHANGELIST)).context["action_form"].fields["action"].choices]
    assert "retry" in offered and "cancel" in offered
    assert "delete_selected" not in offered  # no delete permission
    with django_capture_on_commit_callbacks(execute=True):
        run_action(client, "retry", failed)
    assert fresh(failed).status == JobStatus.QUEUED


def test_delete_action__confirms_then_deletes_finished_jobs_only(root):
    finished = failed_job()
    JobEvent.objects.create(job=finished, kind=EventKind.FAILED, status=JobStatus.FAILED)
    running = make_job(status=JobStatus.RUNNING)
    client = login(root)
    confirm = run_action(client, "delete_selected", finished, running)
    html = confirm.content.decode()
    assert "Are you sure" in html and finished.short_id in html and running.short_id not in html
    assert any("still waiting or running" in m for m in messages_of(confirm))
    assert JobLog.objects.count() == 2  # nothing deleted before the confirmation
    run_action(client, "delete_selected", finished, running, post="yes")
    assert set(JobLog.objects.values_list("pk", flat=True)) == {running.pk}
    assert not JobEvent.objects.exists()


def test_delete__refused_for_unfinished_jobs_and_without_permission(root, operator):
    running = make_job(status=JobStatus.RUNNING)
    finished = failed_job()

    def delete(user, job):
        return login(user).post(reverse("admin:jobs_joblog_delete", args=[job.pk]), {"post": "yes"})

    assert delete(root, running).status_code == 403
    assert delete(operator, finished).status_code == 403
    run_action(login(operator), "delete_selected", finished, post="yes")
    assert JobLog.objects.count() == 2
    delete(root, finished)
    assert set(JobLog.objects.values_list("pk", flat=True)) == {running.pk}


# -------------------------------------------------------------------------------------------------------------
# The detail page and its buttons


def test_change_page__payload_result_error_traceback_and_timeline(root):
    job = failed_job(payload={"rows": ["a@b.c", "nope"], "title": "Contacts"}, result={"imported": 1})
    JobEvent.objects.create(job=job, kind=EventKind.SUBMITTED, status=JobStatus.PENDING, data={"queue": "permanent"})
    JobEvent.objects.create(
        job=job,
        kind=EventKind.FAILED,
        status=JobStatus.FAILED,
        attempt=1,
        message="the input can never work",
        data={"error_type": "PermanentError", "traceback": "Traceback: deep inside"},
    )
    JobEvent.objects.create(job=job, kind=EventKind.RETRIED, status=JobStatus.PENDING, data={"by": root.pk})
    page = login(root).get(reverse("admin:jobs_joblog_change", args=[job.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert '<pre class="jobs-pre jobs-json">{\n  &quot;rows&quot;: [\n    &quot;a@b.c&quot;' in html
    assert "&quot;imported&quot;: 1" in html
    assert "<strong>PermanentError</strong>: the input can never work" in html
    assert "jobs-traceback" in html and "line 1" in html
    assert "retried by hand" in html and "by root" in html and "Traceback: deep inside" in html
    assert "Retry</button>" in html and "Cancel job</button>" not in html


def test_change_page__live_block_only_while_unfinished(root):
    running = make_job(status=JobStatus.RUNNING, progress_percent=30, progress_message="Reading")
    html = login(root).get(reverse("admin:jobs_joblog_change", args=[running.pk])).content.decode()
    assert f'data-live="1" data-ws-path="/ws/jobs/{running.pk}/"' in html
    assert "Cancel job</button>" in html and "Retry</button>" not in html
    done = failed_job()
    html = login(root).get(reverse("admin:jobs_joblog_change", args=[done.pk])).content.decode()
    assert 'data-live=""' in html


def test_change_page__cancel_offered_again_while_a_requested_cancel_has_not_taken_effect(root):
    # The first request's mark may never have reached the worker (Redis away): pressing again sends it again.
    running = make_job(status=JobStatus.RUNNING, cancel_requested_at=timezone.now())
    html = login(root).get(reverse("admin:jobs_joblog_change", args=[running.pk])).content.decode()
    assert "Cancel job</button>" in html


def test_change_page__no_buttons_for_viewers(viewer):
    job = failed_job()
    html = login(viewer).get(reverse("admin:jobs_joblog_change", args=[job.pk])).content.decode()
    assert "Retry</button>" not in html and "Cancel job</button>" not in html


def test_data_view__job_json(root):
    job = make_job(status=JobStatus.RUNNING, progress_percent=55, progress_stage="read", progress_data={"current": 5})
    data = login(root).get(reverse("admin:jobs_joblog_data", args=[job.pk])).json()
    assert data["id"] == str(job.pk) and data["status"] == "running"
    assert data["progress"] == {"percent": 55, "message": "", "stage": "read", "data": {"current": 5}}


def test_buttons__retry_and_cancel(root, redis_url, django_capture_on_commit_callbacks):
    failed = failed_job()
    client = login(root, csrf_checks=True)
    retry_url = reverse("admin:jobs_joblog_retry", args=[failed.pk])
    assert client.post(retry_url).status_code == 403  # no CSRF token
    assert client.get(retry_url).status_code == 405
    client.get(reverse("admin:jobs_joblog_change", args=[failed.pk]))
    token = client.cookies["csrftoken"].value
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(retry_url, {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:jobs_joblog_change", args=[failed.pk])
    assert fresh(failed).status == JobStatus.QUEUED
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:jobs_joblog_cancel", args=[failed.pk]), {"csrfmiddlewaretoken": token})
    assert fresh(failed).status == JobStatus.CANCELED
    # Canceling again is answered with the service's message, not an error page.
    response = client.post(reverse("admin:jobs_joblog_cancel", args=[failed.pk]), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert "already canceled" in " ".join(messages_of(client.get(response["Location"])))


def test_buttons__refused_without_change_permission(viewer, redis_url):
    failed = failed_job()
    queued = make_job(status=JobStatus.QUEUED)
    client = login(viewer)
    assert client.post(reverse("admin:jobs_joblog_retry", args=[failed.pk])).status_code == 403
    assert client.post(reverse("admin:jobs_joblog_cancel", args=[queued.pk])).status_code == 403
    assert fresh(failed).status == JobStatus.FAILED and fresh(queued).status == JobStatus.QUEUED
    assert client.post(reverse("admin:jobs_joblog_retry", args=["not-a-job"])).status_code == 404


# -------------------------------------------------------------------------------------------------------------
# Schedules


def schedule_form(**fields) -> dict:
    return {
        "name": "every five",
        "job_type": "greet",
        "payload": json.dumps({"name": "Ada"}),
        "priority": "normal",
        "enabled": "on",
        "kind": "cron",
        "cron": "*/5 * * * *",
        "interval_seconds": "",
        "run_at_0": "",
        "run_at_1": "",
        "timezone": "UTC",
        "overlap": "skip",
        **fields,
    }


def test_schedule_form__creates_with_next_run_and_owner(root):
    response = login(root).post(reverse("admin:jobs_jobschedule_add"), schedule_form())
    assert response.status_code == 302, response.context["adminform"].form.errors
    schedule = JobSchedule.objects.get(name="every five")
    assert schedule.owner == root and schedule.next_run_at is not None
    assert schedule.payload == {"name": "Ada", "times": 1}  # the serializer's defaults are stored


def test_schedule_form__the_last_editor_owns_it(root):
    editor = grant(make_user("editor", is_staff=True), "view_jobschedule", "change_jobschedule")
    schedule = JobSchedule.objects.create(name="every five", job_type="greet", cron="*/5 * * * *", owner=root)

    response = login(editor).post(
        reverse("admin:jobs_jobschedule_change", args=[schedule.pk]), schedule_form(payload=json.dumps({"name": "Bo"}))
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    schedule.refresh_from_db()
    assert schedule.owner == editor and schedule.payload == {"name": "Bo", "times": 1}


def test_schedule_form__empty_payload_is_an_empty_object(root):
    response = login(root).post(reverse("admin:jobs_jobschedule_add"), schedule_form(job_type="echo", payload=""))
    assert response.status_code == 302
    assert JobSchedule.objects.get(name="every five").payload == {}


def test_schedule_form__bad_cron_refused_with_a_clear_error(root):
    response = login(root).post(reverse("admin:jobs_jobschedule_add"), schedule_form(cron="61 * * * *"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "'61 * * * *' is not a cron expression of five fields" in errors["cron"][0]
    assert "is not a cron expression" in response.content.decode()
    response = login(root).post(reverse("admin:jobs_jobschedule_add"), schedule_form(cron="0 0 31 2 *"))
    assert "never fires" in response.context["adminform"].form.errors["cron"][0]
    assert not JobSchedule.objects.filter(name="every five").exists()


def test_schedule_form__payload_checked_by_the_type_serializer(root):
    client = login(root)
    response = client.post(reverse("admin:jobs_jobschedule_add"), schedule_form(payload=json.dumps({"times": 9})))
    errors = response.context["adminform"].form.errors["payload"]
    assert "name: This field is required." in errors
    assert any(e.startswith("times: Ensure this value is less than or equal to 5") for e in errors)
    response = client.post(reverse("admin:jobs_jobschedule_add"), schedule_form(payload="[1, 2]"))
    assert response.context["adminform"].form.errors["payload"]
    assert not JobSchedule.objects.filter(name="every five").exists()


def test_schedule_form__kind_fields(root):
    client = login(root)
    response = client.post(reverse("admin:jobs_jobschedule_add"), schedule_form(kind="interval", cron=""))
    assert "interval_seconds" in response.context["adminform"].form.errors
    response = client.post(
        reverse("admin:jobs_jobschedule_add"), schedule_form(kind="interval", interval_seconds="90", name="often")
    )
    assert response.status_code == 302
    often = JobSchedule.objects.get(name="often")
    assert (often.cron, often.interval_seconds) == ("", 90)  # the other kind's field is cleared
    response = client.post(reverse("admin:jobs_jobschedule_add"), schedule_form(kind="once", name="one", cron=""))
    assert "run_at" in response.context["adminform"].form.errors


def test_schedule_change_page__cron_in_words_and_next_five_runs(root):
    schedule = JobSchedule.objects.create(
        name="weekday mornings", job_type="echo", cron="0 9 * * 1-5", timezone="Europe/Paris"
    )
    html = login(root).get(reverse("admin:jobs_jobschedule_change", args=[schedule.pk])).content.decode()
    assert "At 09:00, Monday through Friday (Europe/Paris)" in html
    runs = html.split('data-schedule-preview="runs">')[1].split("</ul>")[0]
    assert runs.count("<li>") == 5 and runs.count("09:00 Europe/Paris") == 5
    assert "Run now</button>" in html
    listing = login(root).get(reverse("admin:jobs_jobschedule_changelist")).content.decode()
    assert "At 09:00, Monday through Friday (Europe/Paris)" in listing


def test_schedule_describe__previews_what_the_form_holds(root):
    client = login(root)
    url = reverse("admin:jobs_jobschedule_describe")
    data = client.get(url, {"kind": "cron", "cron": "*/15 * * * *", "timezone": "UTC"}).json()
    assert data["ok"] and data["words"] == "Every 15 minutes (UTC)" and len(data["runs"]) == 5
    data = client.get(url, {"kind": "cron", "cron": "every day", "timezone": "UTC"}).json()
    assert not data["ok"] and "is not a cron expression" in data["error"]
    data = client.get(url, {"kind": "interval", "interval_seconds": "3600"}).json()
    assert data["words"] == "Every hour"


def test_schedule_actions__enable_disable(root):
    schedule = JobSchedule.objects.create(name="s", job_type="echo", cron="*/5 * * * *", enabled=False)
    spent = JobSchedule.objects.create(
        name="spent", job_type="echo", kind="once", run_at=timezone.now(), last_run_at=timezone.now(), enabled=False
    )
    client = login(root)
    url = reverse("admin:jobs_jobschedule_changelist")
    response = client.post(url, {"action": "enable", "_selected_action": [schedule.pk, spent.pk]}, follow=True)
    schedule.refresh_from_db()
    assert schedule.enabled and schedule.next_run_at is not None
    assert any("spent: This one-off schedule has already run" in m for m in messages_of(response))
    assert not JobSchedule.objects.get(name="spent").enabled
    client.post(url, {"action": "disable", "_selected_action": [schedule.pk]})
    schedule.refresh_from_db()
    assert not schedule.enabled and schedule.next_run_at is None


def test_schedule_run_now__action_and_button_enqueue_a_job(root, redis_url, django_capture_on_commit_callbacks):
    schedule = JobSchedule.objects.create(name="greeter", job_type="greet", payload={"name": "Ada"}, cron="0 3 * * *")
    client = login(root)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("admin:jobs_jobschedule_changelist"), {"action": "run_now", "_selected_action": [schedule.pk]}
        )
    job = JobLog.objects.get(schedule=schedule)
    assert job.status == JobStatus.QUEUED and job.owner == root and job.payload == {"name": "Ada", "times": 1}
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:jobs_jobschedule_run", args=[schedule.pk]))
    assert response.status_code == 302
    assert JobLog.objects.filter(schedule=schedule, status=JobStatus.QUEUED).count() == 2
    schedule.refresh_from_db()
    assert schedule.last_job is not None and schedule.last_run_at is not None


def test_schedule_run_now__refused_to_viewers(viewer, redis_url):
    schedule = JobSchedule.objects.create(name="greeter", job_type="greet", payload={"name": "Ada"}, cron="0 3 * * *")
    client = login(viewer)
    assert client.post(reverse("admin:jobs_jobschedule_run", args=[schedule.pk])).status_code == 403
    client.post(reverse("admin:jobs_jobschedule_changelist"), {"action": "run_now", "_selected_action": [schedule.pk]})
    assert not JobLog.objects.exists()
