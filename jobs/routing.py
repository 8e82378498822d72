"""Websocket routes. A project's ASGI application serves them as
``AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))`` (see project/asgi.py)."""

from __future__ import annotations

from django.urls import path

from .consumers import DashboardConsumer, JobConsumer, UserJobsConsumer

websocket_urlpatterns = [
    # Any text as the id: a malformed one is answered 4404 like an unknown job, not a failed handshake.
    path("ws/jobs/<str:job_id>/", JobConsumer.as_asgi()),
    path("ws/jobs/", UserJobsConsumer.as_asgi()),
    path("ws/dashboard/", DashboardConsumer.as_asgi()),
]
