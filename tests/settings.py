"""Settings for the test suite: the jobs app on its own, no demo project."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
    "tests.testapp",
]
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
STATIC_URL = "/static/"

# Worker subprocesses get the test database through DATABASE_URL, so SQLite is a file, never :memory:.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / '.test-db.sqlite3'}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout: the test process and worker subprocesses write to one file at once.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # One file per test run, so two runs on one machine never share (and destroy) each other's database.
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(tempfile.gettempdir(), f"jobs-test-{os.getpid()}.sqlite3")}

ASGI_APPLICATION = "tests.asgi.application"
# Live progress on the test Redis (the layer follows JOBS["REDIS_URL"]).
CHANNEL_LAYERS = {"default": {"BACKEND": "jobs.live.layer.JobsChannelLayer"}}

JOBS = {
    "REDIS_URL": os.environ.get("REDIS_URL"),
    # Fast enough for tests that wait on real retries and cancellations.
    "DEFAULT_BACKOFF": (0.2, 1),
    "CANCEL_POLL_INTERVAL": 0.05,
    "CANCEL_GRACE": 1.0,
    "PROGRESS_MIN_INTERVAL": 0.05,
    "HEARTBEAT_INTERVAL": 0.5,
    "SHUTDOWN_GRACE": float(os.environ.get("JOBS_TEST_SHUTDOWN_GRACE", 30)),
    # Small in tests/integration/test_socket_limits.py, whose ASGI servers are subprocesses.
    "SOCKET_RECHECK_INTERVAL": float(os.environ.get("JOBS_TEST_SOCKET_RECHECK_INTERVAL", 30)),
    "MAX_SOCKETS_PER_USER": int(os.environ.get("JOBS_TEST_MAX_SOCKETS_PER_USER", 20)),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"rq": {"handlers": ["console"], "level": "WARNING"}},
}
