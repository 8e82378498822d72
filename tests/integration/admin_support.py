"""Helpers shared by the admin's integration tests."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from jobs.models import JobLog, JobStatus
from tests.factories import make_job


def grant(user, *codenames):
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="jobs", codename=codename))
    return user


def login(user, *, csrf_checks=False) -> Client:
    client = Client(enforce_csrf_checks=csrf_checks)
    client.force_login(user)
    return client


def fresh(job: JobLog) -> JobLog:
    return JobLog.objects.get(pk=job.pk)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def failed_job(**fields) -> JobLog:
    return make_job(
        job_type="permanent",
        queue="permanent",
        status=JobStatus.FAILED,
        attempts=1,
        error_type="PermanentError",
        error_message="the input can never work",
        traceback='Traceback (most recent call last):\n  File "x.py", line 1\nPermanentError: the input can never work',
        started_at=timezone.now() - timedelta(seconds=3),
        finished_at=timezone.now(),
        **fields,
    )
