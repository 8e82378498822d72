from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from jobs.monitoring import get_health


class Command(BaseCommand):
    help = "Report database, Redis, live workers, queue depth and the oldest waiting job; exit 1 when degraded."

    def handle(self, *args: Any, **options: Any) -> None:
        health = get_health()
        self.stdout.write(json.dumps(health, indent=2))
        if health["status"] != "ok":
            problems = [name for name in ("database", "redis") if not health[name]]
            if not health["workers"]:
                problems.append("no live worker")
            raise CommandError(f"degraded: {', '.join(problems)}")
