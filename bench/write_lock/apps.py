from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.apps import AppConfig


class WriteLockConfig(AppConfig):
    name = "bench.write_lock"
    label = "bench_write_lock"

    def ready(self) -> None:
        from jobs.lifecycle import batches

        from .lock import write_turn

        def in_turn(function: Callable[..., Any]) -> Callable[..., Any]:
            @wraps(function)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with write_turn():
                    return function(*args, **kwargs)

            return wrapper

        # The hot write transactions of a worker: a batch's start and its success (lifecycle.start and
        # lifecycle.succeed call these through the module, so the wrapped ones are what they run).
        batches._start_orm = in_turn(batches._start_orm)  # type: ignore[method-assign]
        batches._succeed_orm = in_turn(batches._succeed_orm)  # type: ignore[method-assign]
