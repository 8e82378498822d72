from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "project.demo"
    label = "demo"
    verbose_name = "Demo"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from jobs.models import JobLog

        from .files import on_job_deleted

        # Retention (jobs_cleanup) deletes rows with QuerySet.delete(), which sends post_delete per row.
        post_delete.connect(on_job_deleted, sender=JobLog, dispatch_uid="demo-delete-job-files")
