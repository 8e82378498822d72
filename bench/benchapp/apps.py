from __future__ import annotations

import os

from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "bench.benchapp"
    label = "benchapp"

    def ready(self) -> None:
        directory = os.environ.get("BENCH_SQL_COUNT_DIR")
        if directory:
            from . import sqlcount

            sqlcount.install(directory)
