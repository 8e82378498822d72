# Two foreign keys lose their own index: a composite index starts with each of them (joblog_owner_created and
# jobevent_timeline), and every row written updates every index. Only the indexes are dropped: Django's own
# AlterField would also drop and re-add (and so re-validate) the foreign key constraints, a full-table check
# under lock on a large jobs table. The names are the ones Django gave these indexes in 0001.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

FK_INDEXES = [
    ("jobs_jobevent", "job_id", "jobs_jobevent_job_id_79067df7"),
    ("jobs_joblog", "owner_id", "jobs_joblog_owner_id_d32407af"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0004_admin_dashboard_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="jobevent",
                    name="job",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="jobs.joblog",
                    ),
                ),
                migrations.AlterField(
                    model_name="joblog",
                    name="owner",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="jobs",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{index}"',
                    reverse_sql=f'CREATE INDEX IF NOT EXISTS "{index}" ON "{table}" ("{column}")',
                )
                for table, column, index in FK_INDEXES
            ],
        ),
    ]
