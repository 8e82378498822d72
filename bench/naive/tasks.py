"""Submitting and running the baseline's tasks: plain ORM writes around django-rq's queue."""

from __future__ import annotations

from typing import Any

import django_rq
from django.db import transaction
from django.utils import timezone
from rq import Queue

from bench.naive.models import TaskLog
from bench.peer_tasks import rq_tasks

TASKS = {"noop": rq_tasks.noop, "sleep": rq_tasks.sleep, "ping": rq_tasks.ping}
QUEUE = "bench"


def run(log_id: str, kind: str, args: list[Any]) -> None:
    """The rq job: the row says running, the task runs, the row says how it ended."""
    TaskLog.objects.filter(pk=log_id).update(status="running", started_at=timezone.now())
    try:
        TASKS[kind](*args)
    except Exception as exc:
        TaskLog.objects.filter(pk=log_id).update(status="failed", finished_at=timezone.now(), error=repr(exc))
        raise
    TaskLog.objects.filter(pk=log_id).update(status="succeeded", finished_at=timezone.now())


def submit(kind: str, args: list[Any]) -> TaskLog:
    """The row and the enqueue in one transaction; the queue's on_db_commit mode enqueues once it commits."""
    with transaction.atomic():
        log = TaskLog.objects.create(task=kind, args=args)
        django_rq.get_queue(QUEUE).enqueue(run, str(log.pk), kind, args)
    return log


def submit_many(kind: str, arg_lists: list[list[Any]]) -> list[TaskLog]:
    """bulk_create the rows, then rq's enqueue_many (one pipeline) on commit."""
    with transaction.atomic():
        logs = TaskLog.objects.bulk_create([TaskLog(task=kind, args=args) for args in arg_lists])
        queue = django_rq.get_queue(QUEUE)
        jobs = [Queue.prepare_data(run, (str(log.pk), kind, log.args)) for log in logs]
        transaction.on_commit(lambda: queue.enqueue_many(jobs))
    return logs
