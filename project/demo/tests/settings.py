"""Settings for the demo's tests: the demo project's settings with a throwaway database, media and mail."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dj_database_url

from project.settings import *  # noqa: F403

SECRET_KEY = "demo-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins; test users only

# Worker subprocesses get the test database through DATABASE_URL, so SQLite is a file, never :memory:.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / '.test-db.sqlite3'}"),  # noqa: F405
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # One file per run, so this suite and tests/ can run at the same time without sharing a database.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"jobs-demo-test-{os.getpid()}.sqlite3")
    }

# Each test gets its own (conftest.py); this one is for anything outside a test.
MEDIA_ROOT = Path(tempfile.gettempdir()) / "jobs-demo-test-media"

JOBS = {
    "REDIS_URL": os.environ.get("REDIS_URL"),
    # Fast enough for tests that wait on real retries.
    "DEFAULT_BACKOFF": (0.2, 1),
    "CANCEL_POLL_INTERVAL": 0.05,
    "CANCEL_GRACE": 1.0,
    "PROGRESS_MIN_INTERVAL": 0.05,
    "HEARTBEAT_INTERVAL": 0.5,
}

DEMO_DEPLOY_FILE_DELAY = 0.0
DEMO_LLM_DELAY = 0.0
AI_TIMEOUT = 1.0

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"rq": {"handlers": ["console"], "level": "WARNING"}},
}
