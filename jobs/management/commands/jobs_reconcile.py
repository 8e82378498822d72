from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from jobs.reconciler import reconcile
from jobs.transport.connections import TransportError


class Command(BaseCommand):
    help = (
        "Repair SQL/Redis divergence once: push pending jobs, re-push queued jobs missing from Redis, "
        "retry or fail running jobs whose worker was lost, restore queue pauses from SQL and unregister dead workers."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--grace", type=float, default=None, help="Leave rows younger than this many seconds alone."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["grace"] is not None and options["grace"] < 0:
            raise CommandError("--grace must be 0 or more seconds.")
        try:
            report = reconcile(grace=options["grace"])
        except TransportError as exc:
            raise CommandError(f"Redis is unreachable, nothing was repaired: {exc}") from None
        if report.skipped:
            self.stdout.write("Another reconciler is running; skipped.")
            return
        self.stdout.write(
            f"pending pushed: {len(report.pushed_pending)}, missing re-pushed: {len(report.repushed_missing)}, "
            f"overdue released: {len(report.released_overdue)}, "
            f"lost attempts recovered: {len(report.recovered_running)}, "
            f"cancel requests resent: {report.resent_cancels}, pauses restored: {len(report.pauses_restored)}, "
            f"dead workers removed: {len(report.dead_workers_removed)}"
        )
