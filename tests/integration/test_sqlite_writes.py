"""Hot write transactions on SQLite take turns through a lock file: across processes and across threads."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from django.db import connection, transaction

from jobs.sqlite_writes import _lock_path, write_turn

# Tries the lock file without waiting, as another worker process would take it; prints what it got.
_TRY_FROM_ANOTHER_PROCESS = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("taken")
else:
    print("free")
"""


def _other_process_finds(path: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _TRY_FROM_ANOTHER_PROCESS, path], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_write_turn__excludes_other_processes_and_threads_on_sqlite_only(transactional_db):
    path = _lock_path()
    if connection.vendor != "sqlite":
        # PostgreSQL has row locks and no single writer: nothing to take turns on.
        assert path is None
        with write_turn():
            assert _lock_path() is None
        return
    assert path is not None and path.endswith("-jobs-write-lock")

    entered_by_thread = threading.Event()

    def other_thread() -> None:
        with write_turn():
            entered_by_thread.set()

    with write_turn():
        assert _other_process_finds(path) == "taken"
        thread = threading.Thread(target=other_thread)
        thread.start()
        time.sleep(0.2)
        assert not entered_by_thread.is_set()  # the second thread of this process waits its turn too
    thread.join(5)
    assert entered_by_thread.is_set()
    assert _other_process_finds(path) == "free"


def test_write_turn__inside_a_callers_transaction_takes_no_lock(transactional_db):
    # The caller may already hold SQLite's write lock: waiting on the file then could deadlock two processes.
    with transaction.atomic():
        assert _lock_path() is None
        with write_turn():
            pass
