"""Settings for bench/peers.py: the test settings plus the bench job types, configured as production would be.

DATABASE_URL and REDIS_URL come from the environment (peers.py sets them). Unlike the test suite, the JOBS
intervals are the shipped defaults (the tests shorten them for speed), database connections persist, and the
submission throttle is off.
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.benchapp.apps.BenchConfig"]
DATABASES["default"]["CONN_MAX_AGE"] = 60
JOBS = {"REDIS_URL": os.environ.get("REDIS_URL"), "SUBMIT_RATE": None}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
