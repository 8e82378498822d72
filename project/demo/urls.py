from __future__ import annotations

from django.urls import path

from . import llm_server, pages, views

urlpatterns = [
    path("", pages.home, name="home"),
    path("api-token/", pages.api_token, name="api-token"),
    path("jobs/", pages.job_list, name="job-list"),
    path("jobs/start/<str:type_name>/", pages.start_job, name="start-job"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job-detail"),
    path("jobs/<uuid:job_id>/cancel/", views.cancel, name="cancel-job"),
    path("jobs/<uuid:job_id>/retry/", views.retry, name="retry-job"),
    path("jobs/<uuid:job_id>/report.csv", views.download_report, name="download-report"),
    path("jobs/<uuid:job_id>/analyse/", views.analyse_report, name="analyse-report"),
    path("jobs/<uuid:job_id>/site/<path:path>", pages.deployed_site, name="deployed-site"),
    path("contacts/", pages.contact_list, name="contact-list"),
    path("contacts/sample.csv", pages.sample_csv, name="contacts-sample"),
    # The local stand-in for an OpenAI-compatible API that ai-generation calls by default (AI_BASE_URL).
    path("demo-llm/v1/chat/completions", llm_server.chat_completions, name="demo-llm-chat"),
    path("demo-llm/v1/models", llm_server.models, name="demo-llm-models"),
]
