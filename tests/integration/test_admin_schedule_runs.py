"""A schedule's admin page lists its recent runs (newest first, capped) and links to all of them in the job list."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.admin.schedules import RECENT_RUNS
from jobs.models import JobLog, JobSchedule, JobStatus
from tests.factories import make_job, make_user
from tests.integration.admin_support import grant, login

pytestmark = pytest.mark.django_db(transaction=True)


def runs_of(html: str) -> list[str]:
    """The job ids of the runs table, in page order."""
    table = html.split('id="recent-runs"')[1].split("</fieldset>")[0]
    return [chunk.split('"')[0] for chunk in table.split('data-run="')[1:]]


def page_url(schedule: JobSchedule) -> str:
    return reverse("admin:jobs_jobschedule_change", args=[schedule.pk])


@pytest.fixture
def schedule():
    return JobSchedule.objects.create(name="nightly", job_type="echo", cron="0 3 * * *")


def run(schedule: JobSchedule, minutes_ago: int, **fields) -> JobLog:
    job = make_job(schedule=schedule, **fields)
    JobLog.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    return job


def test_schedule_page__recent_runs_newest_first_capped_with_status_and_duration(schedule):
    root = make_user("root", is_staff=True, is_superuser=True)
    now = timezone.now()
    old = [run(schedule, 100 + i) for i in range(RECENT_RUNS + 5)]
    done = run(
        schedule,
        2,
        status=JobStatus.SUCCEEDED,
        started_at=now - timedelta(minutes=2),
        finished_at=now - timedelta(minutes=2) + timedelta(seconds=42),
    )
    failed = run(schedule, 1, status=JobStatus.FAILED, started_at=now, finished_at=now + timedelta(seconds=0.25))
    other = make_job(schedule=JobSchedule.objects.create(name="other", job_type="echo", cron="* * * * *"))
    unscheduled = make_job()

    html = login(root).get(page_url(schedule)).content.decode()
    shown = runs_of(html)
    assert len(shown) == RECENT_RUNS
    assert shown[:3] == [str(failed.pk), str(done.pk), str(old[0].pk)]
    assert str(old[-1].pk) not in shown and str(other.pk) not in shown and str(unscheduled.pk) not in shown
    row = html.split(f'data-run="{done.pk}"')[1].split("</tr>")[0]
    assert reverse("admin:jobs_joblog_change", args=[done.pk]) in row and done.short_id in row
    assert "jobs-badge--succeeded" in row and "42.0 s" in row
    assert "250 ms" in html.split(f'data-run="{failed.pk}"')[1].split("</tr>")[0]
    assert f"{RECENT_RUNS + 7} runs in all" in html

    # The link to all of them: the job list, filtered by this schedule.
    link = html.split('class="jobs-runs-all"><a href="')[1].split('"')[0].replace("&amp;", "&")
    assert link == reverse("admin:jobs_joblog_changelist") + f"?schedule__id__exact={schedule.pk}"
    listing = login(root).get(link)
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == RECENT_RUNS + 7
    assert other.short_id not in listing.content.decode()


def test_schedule_page__no_runs_yet(schedule):
    root = make_user("root", is_staff=True, is_superuser=True)
    html = login(root).get(page_url(schedule)).content.decode()
    assert "No runs yet." in html.split('id="recent-runs"')[1]


def test_schedule_page__runs_only_as_far_as_the_user_may_see_jobs(schedule):
    """Without jobs.view_joblog, staff are plain users for jobs: their own runs, and no links to the job admin."""
    scheduler_only = grant(make_user("planner", is_staff=True), "view_jobschedule")
    mine = run(schedule, 1, owner=scheduler_only)
    theirs = run(schedule, 2, owner=make_user("someone"))
    html = login(scheduler_only).get(page_url(schedule)).content.decode()
    assert runs_of(html) == [str(mine.pk)]
    assert str(theirs.pk) not in html
    section = html.split('id="recent-runs"')[1].split("</fieldset>")[0]
    assert "/admin/jobs/joblog/" not in section
