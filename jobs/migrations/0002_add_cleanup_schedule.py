from __future__ import annotations

from typing import Any

from django.db import migrations

NAME = "jobs: delete finished jobs past retention"


def add_schedule(apps: Any, schema_editor: Any) -> None:
    JobSchedule = apps.get_model("jobs", "JobSchedule")
    # Daily at 03:17 UTC: off the hour, when most other cron work runs.
    JobSchedule.objects.get_or_create(
        name=NAME,
        defaults={"job_type": "jobs-cleanup", "kind": "cron", "cron": "17 3 * * *", "timezone": "UTC", "payload": {}},
    )


def remove_schedule(apps: Any, schema_editor: Any) -> None:
    apps.get_model("jobs", "JobSchedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("jobs", "0001_initial")]
    operations = [migrations.RunPython(add_schedule, remove_schedule)]
