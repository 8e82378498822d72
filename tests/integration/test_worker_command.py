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
