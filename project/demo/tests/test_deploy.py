"""deploy: a static site rendered into the owner's folder, switched live by its deploy script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings

from jobs import submit
from jobs.exceptions import InvalidPayload
from jobs.models import JobLog

from .support import RecordingContext

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOAD = {
    "project": "acme",
    "title": "Acme <Rockets>",
    "tagline": "Rockets that come back",
    "theme": "landing",
    "pages": ["About", "Pricing"],
    "custom_domain": "WWW.Acme.example",
}


def submit_job(user, django_capture_on_commit_callbacks, payload=None, **options) -> JobLog:
    with django_capture_on_commit_callbacks(execute=True):
        return submit("deploy", payload or PAYLOAD, user=user, **options)


def test_deploy__renders_the_site_and_switches_it_live(user, run_until_done, django_capture_on_commit_callbacks):
    job = run_until_done(submit_job(user, django_capture_on_commit_callbacks))

    assert job.status == "succeeded", job.error_message
    result = job.result
    folder = Path(settings.MEDIA_ROOT) / result["folderPath"]
    assert result["folderPath"] == f"sites/{user.pk}/acme/releases/{job.id}"
    written = sorted(p.name for p in folder.iterdir())
    assert written == sorted(
        [
            "index.html",
            "about.html",
            "pricing.html",
            "404.html",
            "style.css",
            "sitemap.xml",
            "robots.txt",
            "CNAME",
            "deploy.py",
            "manifest.json",
        ]
    )
    assert result["fileCount"] == len(written)
    assert result["deployTime"] > 0 and result["live"] is True and result["domain"] == "www.acme.example"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {entry["path"] for entry in manifest["files"]} == set(written) - {"manifest.json"}
    index = (folder / "index.html").read_text()
    assert "Acme &lt;Rockets&gt;" in index and 'href="pricing.html"' in index
    assert (folder / "CNAME").read_text() == "www.acme.example\n"
    assert "https://www.acme.example/about.html" in (folder / "sitemap.xml").read_text()
    current = folder.parent.parent / "current"
    assert current.is_symlink() and current.resolve() == folder.resolve()
    assert job.progress_stage == "done" and job.progress_percent == 100


def test_deploy__reports_each_stage(user, settings):
    from project.demo.job_types import DeployPayload, deploy

    ctx = RecordingContext(owner_id=user.pk)
    serializer = DeployPayload(data=PAYLOAD)
    assert serializer.is_valid(), serializer.errors
    deploy(ctx, serializer.validated_data)

    stages = list(dict.fromkeys(stage for _percent, _message, stage in ctx.calls))
    assert stages == ["init", "manifest", "files", "deploy", "done"]
    percents = [percent for percent, _message, _stage in ctx.calls]
    assert percents == sorted(percents) and percents[-1] == 100


def test_deploy__without_the_script_writes_files_only(user, run_until_done, django_capture_on_commit_callbacks):
    payload = {**PAYLOAD, "run_deploy_script": False, "custom_domain": "", "pages": []}
    job = run_until_done(submit_job(user, django_capture_on_commit_callbacks, payload))

    assert job.status == "succeeded"
    folder = Path(settings.MEDIA_ROOT) / job.result["folderPath"]
    assert not (folder / "deploy.py").exists() and not (folder / "CNAME").exists()
    assert not (folder.parent.parent / "current").exists()
    assert job.result["live"] is False and job.result["fileCount"] == 6


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"project": "../etc"}, "project", "letters"),
        ({"theme": "neon"}, "theme", "not a valid choice"),
        ({"pages": ["About", "about"]}, "pages", "would be the same page"),
        ({"pages": ["Index"]}, "pages", "would overwrite"),
        ({"custom_domain": "not a domain"}, "custom_domain", "domain name like"),
        ({"accent_color": "red"}, "accent_color", "#0969da"),
        ({"title": ""}, "title", "blank"),
    ],
)
def test_deploy__bad_input_names_the_field(user, change, field, message):
    with pytest.raises(InvalidPayload) as caught:
        submit("deploy", {**PAYLOAD, **change}, user=user)
    assert message in " ".join(str(e) for e in caught.value.errors[field])
    assert not JobLog.objects.exists()


def test_deploy__a_failing_deploy_script_is_retried_then_fails(
    user, run_until_done, django_capture_on_commit_callbacks, monkeypatch
):
    from project.demo import sitegen

    monkeypatch.setattr(sitegen, "DEPLOY_SCRIPT", "import sys\nsys.exit('the host refused the upload')\n")
    job = run_until_done(submit_job(user, django_capture_on_commit_callbacks))

    assert job.status == "failed"
    assert job.attempts == 3
    assert job.error_type == "DeployScriptFailed"
    assert "the host refused the upload" in job.error_message


def test_deploy__a_theme_that_does_not_render_fails_at_once(
    user, run_until_done, django_capture_on_commit_callbacks, monkeypatch, settings
):
    from project.demo import sitegen

    def broken(payload, release):
        raise KeyError("theme template missing")

    monkeypatch.setattr(sitegen, "render_site", broken)
    job = run_until_done(submit_job(user, django_capture_on_commit_callbacks))

    assert job.status == "failed" and job.attempts == 1 and job.error_type == "KeyError"


def test_deploy__type_limits(user):
    from jobs.registry import get

    deploy = get("deploy")
    assert (deploy.concurrency, deploy.rate_limit, deploy.timeout) == (3, "10/m", 600)
