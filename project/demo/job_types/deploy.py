"""deploy: builds a static site from a few fields into a release folder and switches the site to it."""

from __future__ import annotations

import re
import shutil
import time
from typing import Any

from django.conf import settings
from django.urls import reverse
from rest_framework import serializers

from jobs import job_type
from jobs.types import Priority

from .. import sitegen

HOSTNAME = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", re.IGNORECASE)
RESERVED_PAGES = {"index", "404", "style", "sitemap", "robots", "manifest", "deploy"}


class DeployPayload(serializers.Serializer[Any]):
    project = serializers.SlugField(max_length=40, help_text="Folder name of the site, e.g. my-site.")
    title = serializers.CharField(max_length=100)
    tagline = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    theme = serializers.ChoiceField(choices=sitegen.THEME_CHOICES, default="minimal")
    pages = serializers.ListField(
        child=serializers.CharField(max_length=40), max_length=12, required=False, default=["About", "Contact"]
    )
    accent_color = serializers.RegexField(
        r"^#[0-9a-fA-F]{6}$", default="#0969da", error_messages={"invalid": "Use a colour like #0969da."}
    )
    custom_domain = serializers.RegexField(
        HOSTNAME,
        required=False,
        allow_blank=True,
        default="",
        error_messages={"invalid": "Enter a domain name like www.example.com."},
    )
    run_deploy_script = serializers.BooleanField(default=True, help_text="Verify the files and switch the site live.")

    def validate_custom_domain(self, value: str) -> str:
        return value.lower()

    def validate_pages(self, value: list[str]) -> list[str]:
        slugs: dict[str, str] = {}
        for title in value:
            slug = sitegen.page_slug(title)
            if not slug:
                raise serializers.ValidationError(f"{title!r} has no letters or digits to name its file.")
            if slug in RESERVED_PAGES:
                raise serializers.ValidationError(f"{title!r} would overwrite the site's {slug} file.")
            if slug in slugs:
                raise serializers.ValidationError(f"{title!r} and {slugs[slug]!r} would be the same page.")
            slugs[slug] = title
        return value


def deploy_priority(payload: dict[str, Any]) -> Priority:
    """A site with its own domain is a customer's production site: it goes ahead of the queue."""
    return "high" if payload.get("custom_domain") else "normal"


@job_type(
    "deploy",
    payload=DeployPayload,
    max_attempts=3,
    timeout=600,
    rate_limit="10/m",
    concurrency=3,
    # Full disks and a failing deploy script may pass; a template that does not render will not.
    retry_on=(OSError, sitegen.DeployScriptFailed),
)
def deploy(ctx: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Render a static site from a theme into a per-user release folder, then switch it live with its deploy script."""
    started = time.monotonic()
    release = ctx.job_id
    folder = sitegen.release_dir(ctx.owner_id, payload["project"], release)
    ctx.progress(2, "Preparing the release folder", stage="init")
    sitegen.prepare(folder)

    ctx.progress(5, "Generating file manifest", stage="manifest")
    files = sitegen.render_site(payload, release)
    manifest = sitegen.SiteFile("manifest.json", sitegen.manifest_bytes(payload, release, files))
    sitegen.write_file(folder, manifest)
    ctx.progress(15, f"Manifest lists {len(files)} files", stage="manifest", current=0, total=len(files))

    delay = float(getattr(settings, "DEMO_DEPLOY_FILE_DELAY", 0))
    for number, site_file in enumerate(files, start=1):
        if ctx.is_canceled():
            shutil.rmtree(folder, ignore_errors=True)
            return None
        sitegen.write_file(folder, site_file)
        if delay:
            time.sleep(delay)  # stands in for uploading the file to a real host
        ctx.progress(
            15 + 75 * number // len(files),
            f"Wrote {site_file.path}",
            stage="files",
            current=number,
            total=len(files),
        )

    output = ""
    if payload["run_deploy_script"]:
        ctx.progress(92, "Running deploy.py", stage="deploy")
        output = sitegen.run_deploy_script(folder)
    ctx.progress(100, "Deployed" if output else "Files written", stage="done")
    return {
        "folderPath": str(folder.relative_to(settings.MEDIA_ROOT)),
        "fileCount": len(files) + 1,  # and manifest.json
        "deployTime": round(time.monotonic() - started, 3),  # seconds
        "bytes": sum(len(f.content) for f in files) + len(manifest.content),
        "theme": payload["theme"],
        "domain": payload["custom_domain"] or None,
        "live": bool(output),
        "deployOutput": output,
        "url": reverse("deployed-site", kwargs={"job_id": ctx.job_id, "path": "index.html"}),
    }
