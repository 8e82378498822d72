from __future__ import annotations

import signal
import threading
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from jobs.scheduler import run_scheduler


class Command(BaseCommand):
    help = (
        "Run the scheduler: turns due JobSchedule rows into jobs (each tick exactly once, even with several "
        "schedulers running) and runs the reconciler periodically. Stops on SIGINT/SIGTERM."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--once", action="store_true", help="Run one tick (and one reconcile pass), then exit.")

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        run_scheduler(stop, once=options["once"])
