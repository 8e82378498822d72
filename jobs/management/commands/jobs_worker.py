from __future__ import annotations

import logging
import os
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from jobs.exceptions import JobsError
from jobs.workers.supervisor import WorkerOptions, run_worker


def configure_logging(level: str) -> None:
    """``level`` for the jobs' own loggers; rq's routine lines (registry cleaning and the like) only at DEBUG, its
    warnings and errors always. The project's LOGGING decides where records go; without a root handler, stderr."""
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    logging.getLogger("jobs").setLevel(level)
    rq_level = level if level in ("DEBUG", "ERROR") else "WARNING"
    # rq gives "rq.worker" a level of its own (INFO) when imported: a level on "rq" alone would not reach it.
    for name in ("rq", "rq.worker", "rq.job"):
        logging.getLogger(name).setLevel(rq_level)


class Command(BaseCommand):
    help = (
        "Run the jobs worker: --processes supervised processes (default: one per CPU), each running up to "
        "--concurrency jobs at once. With no options it consumes every registered queue, all priority levels in "
        "strict order (critical, high, normal, low), and moves delayed jobs and retries when they are due."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--queues", nargs="+", default=[], metavar="QUEUE", help="Job queue names to consume.")
        parser.add_argument(
            "--types", nargs="+", default=[], metavar="TYPE", help="Consume the queues of these job types."
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=os.cpu_count() or 1,
            help="Worker processes, each restarted if it dies (default: the CPU count).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=WorkerOptions.concurrency,
            help="Jobs each process runs at once: sync handlers on threads, async ones on an event loop "
            f"(default {WorkerOptions.concurrency}).",
        )
        parser.add_argument("--name", default=None, help="Worker name prefix (default: the host name).")
        parser.add_argument("--burst", action="store_true", help="Stop once the queues are empty.")
        parser.add_argument("--max-jobs", type=int, default=None, help="Each process stops after this many jobs.")
        parser.add_argument(
            "--without-scheduler", action="store_true", help="Do not move delayed jobs and retries when due."
        )
        parser.add_argument(
            "--logging-level",
            default="INFO",
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            help="Level of the jobs' own log lines (default INFO); DEBUG also shows rq's routine lines, such as "
            "the cleaning of its registries.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logging(options["logging_level"])
        try:
            run_worker(
                WorkerOptions(
                    queues=options["queues"],
                    types=options["types"],
                    processes=options["processes"],
                    concurrency=options["concurrency"],
                    name=options["name"],
                    burst=options["burst"],
                    max_jobs=options["max_jobs"],
                    with_scheduler=not options["without_scheduler"],
                )
            )
        except JobsError as exc:
            raise CommandError(str(exc)) from None
