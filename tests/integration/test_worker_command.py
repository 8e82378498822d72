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
        (["--worker-class", "no.such.Worker"], "Cannot import worker class"),
        (["--worker-class", "jobs.models.JobLog"], "is not an rq worker class"),
        (["--max-jobs", "0"], "--max-jobs must be 1 or more"),
        (["--worker-class", "rq.worker.SpawnWorker"], "without Django"),
    ],
)
def test_jobs_worker__bad_options_refused(args, message, redis_url):
    with pytest.raises(CommandError) as err:
        call_command("jobs_worker", "--burst", *args)
    assert message in str(err.value)


@pytest.mark.parametrize("worker_class", ["simple", "fork", "rq.worker.SimpleWorker"])
def test_jobs_worker__burst_runs_only_the_chosen_types(worker_class, workers):
    with transaction.atomic():
        chosen = [submit("echo", {"n": i}) for i in range(3)]
        other = submit("greet", {"name": "Ada"})
    proc = subprocess.run(
        [sys.executable, "-m", "django", "jobs_worker", "--burst", "--types", "echo", "--worker-class", worker_class],
        cwd=ROOT,
        env=workers.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert {JobLog.objects.get(pk=j.pk).status for j in chosen} == {JobStatus.SUCCEEDED}
    assert JobLog.objects.get(pk=other.pk).status == JobStatus.QUEUED


@pytest.mark.parametrize(("worker_class", "concurrency"), [("simple", 1), ("thread", 4)])
def test_worker_teardown__does_not_wait_out_a_listener_that_already_saw_its_unsubscribe(
    worker_class, concurrency, redis_url
):
    import threading

    from jobs.worker import build_worker
    from tests.conftest import wait_for

    worker = build_worker(worker_class=worker_class, concurrency=concurrency)
    worker.subscribe()
    wait_for(lambda: worker.pubsub.subscribed and worker.pubsub_thread.is_alive(), what="the listener")
    # The race rq loses now and then: the listener handles the unsubscribe reply before it is told to stop,
    # then waits up to 60 s for a new subscription (and redis-py 8's stop() waits for it).
    worker.pubsub.unsubscribe()
    wait_for(lambda: not worker.pubsub.subscribed, what="the listener to see the unsubscribe")

    teardown = threading.Thread(target=worker.unsubscribe, daemon=True)
    teardown.start()
    teardown.join(10)
    assert not teardown.is_alive(), "unsubscribe() waited for the listener's 60 s sleep"


def test_forking_worker__builds_the_channel_layer_before_it_forks(transactional_db, redis_url):
    from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

    from jobs.worker import build_worker

    job = submit("greet", {"name": "horse"})
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)  # as in a worker process that never sent a frame
    build_worker(worker_class="fork").work(burst=True, logging_level="WARNING")

    assert JobLog.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED
    # Built in the worker itself, so every horse inherits it instead of importing its modules again per job.
    assert DEFAULT_CHANNEL_LAYER in channel_layers.backends


def test_redis_client__a_forked_work_horse_shares_it_on_a_socket_of_its_own(redis_url):
    import json
    import os

    from jobs import queues

    client = queues.get_connection()
    parent_socket = client.client_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the horse: report and leave as rq's work horse leaves
        try:
            same = queues.get_connection() is client
            os.write(write_end, json.dumps({"same": same, "socket": client.client_id()}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        child = json.loads(pipe.read())

    assert child["same"], "the horse built a second client, so it opens a second connection"
    # redis-py's pool noticed the fork: the horse talked on a new socket, never on its parent's ...
    assert child["socket"] != parent_socket
    # ... which is still connected, and the client still works.
    assert str(parent_socket) in {str(entry["id"]) for entry in client.client_list()}
    assert client.ping()
