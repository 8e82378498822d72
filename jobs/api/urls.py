"""Routes of the jobs API; a project mounts them with ``path("api/", include("jobs.api.urls"))``."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import uploads, views

app_name = "jobs-api"

# SimpleRouter, not DefaultRouter: its API root view would be the one view without an OpenAPI schema.
router = SimpleRouter()
router.register("jobs", views.JobViewSet, basename="job")
router.register("queues", views.QueueViewSet, basename="queue")
router.register("schedules", views.ScheduleViewSet, basename="schedule")

documented = [
    path("job-types/", views.JobTypeListView.as_view(), name="job-types"),
    path("health/", views.HealthView.as_view(), name="health"),
    path("uploads/", uploads.UploadListView.as_view(), name="uploads"),
    path("uploads/<str:id>/", uploads.UploadDetailView.as_view(), name="upload-detail"),
    *router.urls,
]

urlpatterns = [
    *documented,
    # The document covers the routes above only, whatever else the project mounts.
    path("schema/", views.SchemaView.as_view(urlconf=documented), name="schema"),
    path("docs/", views.DocsView.as_view(), name="docs"),
]
