"""Counts the SQL statements this process sends, by first keyword, and writes them to <dir>/<pid>.json at exit.

Installed by BenchConfig.ready() when BENCH_SQL_COUNT_DIR is set. Django's execute wrappers see every statement
the ORM runs; the BEGIN and COMMIT of atomic blocks are not statements there (peers.py reads those from
pg_stat_database instead).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db.backends.signals import connection_created

_counts: Counter[str] = Counter()
_lock = threading.Lock()
_directory: Path | None = None


def _count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
    with _lock:
        _counts[verb] += 1
    return execute(sql, params, many, context)


def _on_connect(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


def dump() -> None:
    if _directory is None:
        return
    with _lock:
        data = dict(_counts)
    tmp = _directory / f"{os.getpid()}.json.tmp"
    tmp.write_text(json.dumps(data))
    tmp.replace(_directory / f"{os.getpid()}.json")


def install(directory: str) -> None:
    global _directory
    _directory = Path(directory)
    _directory.mkdir(parents=True, exist_ok=True)
    connection_created.connect(_on_connect, weak=False)
    atexit.register(dump)
