from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("jobs/start/<str:type_name>/", views.start_job, name="start-job"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job-detail"),
    path("jobs/<uuid:job_id>/cancel/", views.cancel, name="cancel-job"),
    path("jobs/<uuid:job_id>/retry/", views.retry, name="retry-job"),
    path("jobs/<uuid:job_id>/report.csv", views.download_report, name="download-report"),
    path("jobs/<uuid:job_id>/analyse/", views.analyse_report, name="analyse-report"),
]
