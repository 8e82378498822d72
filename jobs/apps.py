from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = _("Jobs")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.core import checks
        from django.db.models.signals import post_delete, pre_delete
        from django.utils.module_loading import autodiscover_modules

        from . import checks as jobs_checks
        from . import services, uploads
        from .models import Upload

        checks.register(jobs_checks.check_settings, "jobs")
        checks.register(jobs_checks.check_job_types, "jobs")
        pre_delete.connect(services.forget_idempotency_keys, sender=get_user_model(), dispatch_uid="jobs-user-keys")
        # However an upload's row goes (retention, the admin, its user deleted), its file goes too.
        post_delete.connect(uploads.delete_stored_file, sender=Upload, dispatch_uid="jobs-upload-files")
        # Like admin.py: every installed app's job_types.py registers its types at startup.
        autodiscover_modules("job_types")
