"""Settings of the benchmarks: the jobs app, the bench job types, and production's choices.

DATABASE_URL and REDIS_URL come from the environment (bench.harness.django_env). The JOBS intervals are the
shipped defaults, database connections persist, and the submission throttle is off. SQLite gets the demo's options
(WAL, IMMEDIATE transactions, a busy timeout; see project/settings.py). BENCH_SQLITE_WRITE_LOCK=1 adds the old lock
file (bench.write_lock) for bench.sqlite_lock_ab; BENCH_FAST_RECOVERY=1 shortens the recovery intervals, as the
test suite does, for bench.soak.
"""

from __future__ import annotations

import os
from typing import Any

import dj_database_url

SECRET_KEY = "benchmarks-only-not-a-secret"  # signs nothing that leaves this machine
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "bench.urls"
ASGI_APPLICATION = "bench.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "/static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "jobs",
    "bench.benchapp",
]
if os.environ.get("BENCH_SQLITE_WRITE_LOCK") == "1":
    INSTALLED_APPS.append("bench.write_lock")
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

CHANNEL_LAYERS = {"default": {"BACKEND": "jobs.live.layer.JobsChannelLayer"}}
JOBS: dict[str, Any] = {"REDIS_URL": os.environ.get("REDIS_URL"), "SUBMIT_RATE": None}
if os.environ.get("BENCH_FAST_RECOVERY") == "1":
    # A killed worker's jobs come back within seconds, so a soak run settles quickly.
    JOBS.update(
        DEFAULT_BACKOFF=(0.2, 1),
        HEARTBEAT_INTERVAL=0.5,
        RECONCILE_GRACE=1.0,
        RECONCILE_EVERY=2.0,
        CANCEL_GRACE=1.0,
        SHUTDOWN_GRACE=5.0,
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
