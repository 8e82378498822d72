"""Settings of the django-rq baseline (bench/naive/): django-rq and the TaskLog model, nothing of the jobs app.

DATABASE_URL and BENCH_REDIS_URL come from the environment (bench.peers sets them). Connections persist, as in
bench.settings, so both sides pay the same for theirs.
"""

from __future__ import annotations

import os

import dj_database_url

SECRET_KEY = "django-rq-baseline-benchmark-only"  # signs nothing: no sessions, no users
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django_rq", "bench.naive"]
DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60)}
RQ_QUEUES = {"bench": {"URL": os.environ["BENCH_REDIS_URL"]}}
RQ = {"COMMIT_MODE": "on_db_commit"}  # enqueue when the submitting transaction commits, never before
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
