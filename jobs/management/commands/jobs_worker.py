from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from jobs.exceptions import JobsError
from jobs.worker import run_worker, worker_classes


class Command(BaseCommand):
    help = (
        "Run a jobs worker. With no options it consumes every registered queue, all priority levels "
        "in strict order (critical, high, normal, low), with rq's scheduler for delayed jobs and retries."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--queues", nargs="+", default=[], metavar="QUEUE", help="Job queue names to consume.")
        parser.add_argument(
            "--types", nargs="+", default=[], metavar="TYPE", help="Consume the queues of these job types."
        )
        parser.add_argument(
            "--worker-class",
            default="fork",
            help=f"One of {', '.join(worker_classes())} or the dotted path of an rq worker class (default: fork).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=1,
            help="Jobs run at once by this process, on a thread pool (default 1: one at a time).",
        )
        parser.add_argument("--name", default=None, help="Worker name (default: rq's, from host and pid).")
        parser.add_argument("--burst", action="store_true", help="Stop once the queues are empty.")
        parser.add_argument("--max-jobs", type=int, default=None, help="Stop after this many jobs.")
        parser.add_argument(
            "--without-scheduler", action="store_true", help="Do not run rq's scheduler (delayed jobs, retries)."
        )
        parser.add_argument("--logging-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def handle(self, *args: Any, **options: Any) -> None:
        if options["max_jobs"] is not None and options["max_jobs"] < 1:
            raise CommandError("--max-jobs must be 1 or more.")
        try:
            run_worker(
                queue_names=options["queues"],
                type_names=options["types"],
                worker_class=options["worker_class"],
                name=options["name"],
                burst=options["burst"],
                with_scheduler=not options["without_scheduler"],
                max_jobs=options["max_jobs"],
                logging_level=options["logging_level"],
                concurrency=options["concurrency"],
            )
        except JobsError as exc:
            raise CommandError(str(exc)) from None
