"""manage.py jobs_worker: its options and its refusals."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

from jobs import submit
from jobs.models import JobLog, JobStatus
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queues", "nope"], "Unknown queue(s): nope"),
        (["--types", "nope"], "no job type named 'nope'"),
        (["--max-jobs", "0"], "--max-jobs must be 1 or more"),
        (["--processes", "0"], "--processes must be 1 or more"),
        (["--concurrency", "0"], "--concurrency must be 1 or more"),
    ],
)
def test_jobs_worker__bad_options_refused(args, message, redis_url):
    with pytest.raises(CommandError) as err:
        call_command("jobs_worker", "--burst", *args)
    assert message in str(err.value)


@pytest.mark.parametrize("options", [("--processes", "1", "--concurrency", "1"), ("--processes", "2")])
def test_jobs_worker__burst_runs_only_the_chosen_types(options, workers):
    with transaction.atomic():
        chosen = [submit("echo", {"n": i}) for i in range(3)]
        other = submit("greet", {"name": "Ada"})
    proc = subprocess.run(
        [sys.executable, "-m", "django", "jobs_worker", "--burst", "--types", "echo", *options],
        cwd=ROOT,
        env=workers.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert {JobLog.objects.get(pk=j.pk).status for j in chosen} == {JobStatus.SUCCEEDED}
    assert JobLog.objects.get(pk=other.pk).status == JobStatus.QUEUED


def test_redis_client__a_forked_worker_process_shares_it_on_a_socket_of_its_own(redis_url):
    import json
    import os

    from jobs.transport.connections import get_connection

    client = get_connection()
    parent_socket = client.client_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave as the supervisor's children leave
        try:
            same = get_connection() is client
            os.write(write_end, json.dumps({"same": same, "socket": client.client_id()}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        child = json.loads(pipe.read())

    assert child["same"], "the child built a second client, so it opens a second pool"
    # redis-py's pool noticed the fork: the child talked on a new socket, never on its parent's ...
    assert child["socket"] != parent_socket
    # ... which is still connected, and the client still works.
    assert str(parent_socket) in {str(entry["id"]) for entry in client.client_list()}
    assert client.ping()


@pytest.mark.parametrize(("args", "shown"), [((), False), (("--logging-level", "DEBUG"), True)])
def test_jobs_worker__routine_lines_are_logged_at_debug_only(args, shown, workers):
    with transaction.atomic():
        # A plain job, and one whose concurrency slot rq's own success handling frees.
        jobs = [submit("echo", {"n": 1}), submit("capped", {"seconds": 0})]
    proc = subprocess.run(
        [sys.executable, "-m", "django", "jobs_worker", "--burst", "--processes", "1", "--types", "echo", "capped"]
        + list(args),
        cwd=ROOT,
        env=workers.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert {JobLog.objects.get(pk=j.pk).status for j in jobs} == {JobStatus.SUCCEEDED}
    output = proc.stderr + proc.stdout
    # The supervisor's registry cleaning, and rq's line for each job it settles.
    assert ("Cleaning registries for " in output) is shown, output
    assert ("Successfully completed" in output) is shown, output


@pytest.fixture
def restored_log_levels():
    import logging

    loggers = [logging.getLogger(name) for name in ("jobs", "rq", "rq.worker", "rq.job")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("WARNING", False), ("DEBUG", True)])
def test_jobs_worker__rqs_routine_lines_show_only_at_debug(level, shown, redis_url, restored_log_levels, caplog):
    from rq import Queue, Worker

    from jobs.management.commands.jobs_worker import configure_logging
    from jobs.transport.connections import get_connection

    configure_logging(level)
    # rq's own worker maintenance, which logs a line per queue at INFO.
    Worker([Queue("jobs:echo:normal", connection=get_connection())], connection=get_connection()).clean_registries()

    assert any("cleaning registries for queue" in r.getMessage() for r in caplog.records) is shown
