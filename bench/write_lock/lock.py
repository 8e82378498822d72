"""Hot write transactions on SQLite take turns through a lock file instead of SQLite's busy handler.

As jobs/sqlite_writes.py was at d4f76d0: a writer that finds SQLite's database locked sleeps in its busy handler in
steps of milliseconds, while an exclusive flock(2) on a file beside the database wakes the next waiter as soon as
the lock is released.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

try:
    import fcntl
except ImportError:  # not on Windows: there the busy handler does it alone
    fcntl = None  # type: ignore[assignment]

# Per process and lock file: a forked child opens its own, since a descriptor inherited from its parent shares the
# parent's lock, and a thread lock copied while some thread of the parent held it would never be released.
_locks: dict[tuple[int, str], tuple[int, threading.Lock]] = {}
_setup_lock = threading.Lock()


@contextmanager
def write_turn() -> Iterator[None]:
    """Hold this machine's turn to write to the SQLite database of ``connection`` (nothing on other databases)."""
    path = _lock_path()
    if path is None:
        yield
        return
    descriptor, thread_lock = _lock_for(path)
    # flock belongs to the open file, which this process's threads share: a thread lock first, so the threads of
    # one process also take turns.
    with thread_lock:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)


def _lock_path() -> str | None:
    if fcntl is None or connection.vendor != "sqlite" or connection.in_atomic_block:
        # In a caller's transaction the lock order would be the caller's: never wait on the file while holding
        # SQLite's own write lock, or two processes could each wait for the other.
        return None
    name = str(connection.settings_dict["NAME"])
    if not name or name == ":memory:" or name.startswith("file:"):
        return None  # in-memory databases are private to one process
    return os.path.abspath(name) + "-jobs-write-lock"  # beside -wal and -shm


def _lock_for(path: str) -> tuple[int, threading.Lock]:
    key = (os.getpid(), path)
    lock = _locks.get(key)
    if lock is None:
        with _setup_lock:
            lock = _locks.get(key)
            if lock is None:
                lock = _locks[key] = (os.open(path, os.O_RDWR | os.O_CREAT, 0o600), threading.Lock())
    return lock
