from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from jobs.retention import cleanup_finished_jobs


class Command(BaseCommand):
    help = (
        "Delete finished jobs and their events once they are older than their job type's retention, and uploads "
        "older than JOBS['DEFAULT_RETENTION_DAYS']."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--batch-size", type=int, default=1000, help="Rows deleted per transaction.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be 1 or more.")
        report = cleanup_finished_jobs(batch_size=options["batch_size"])
        self.stdout.write(
            f"deleted {report.jobs_deleted} jobs and {report.events_deleted} events, {report.uploads_deleted} uploads"
        )
