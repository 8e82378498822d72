from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = _("Jobs")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks
        from django.utils.module_loading import autodiscover_modules

        from . import checks as jobs_checks

        checks.register(jobs_checks.check_settings, "jobs")
        checks.register(jobs_checks.check_job_types, "jobs")
        # Like admin.py: every installed app's job_types.py registers its types at startup.
        autodiscover_modules("job_types")
