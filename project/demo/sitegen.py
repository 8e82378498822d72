"""The deploy job's work: render a small static site from a theme, write it as a release, switch it live.

Layout under MEDIA_ROOT, per user and project::

    sites/<owner id>/<project>/releases/<job id>/   the release: pages, style.css, sitemap.xml, manifest.json, ...
    sites/<owner id>/<project>/current              symlink to the live release, switched by deploy.py
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.template.loader import render_to_string
from django.utils.text import slugify

THEMES: dict[str, dict[str, str]] = {
    "minimal": {
        "label": "Minimal",
        "fg": "#1f2328",
        "bg": "#ffffff",
        "card": "#f6f8fa",
        "font": "system-ui, sans-serif",
        "width": "760px",
        "hero_padding": "2rem",
        "hero_align": "left",
    },
    "docs": {
        "label": "Documentation",
        "fg": "#24292f",
        "bg": "#fbfbfd",
        "card": "#eef1f5",
        "font": "Georgia, serif",
        "width": "900px",
        "hero_padding": "1rem",
        "hero_align": "left",
    },
    "landing": {
        "label": "Landing page",
        "fg": "#f0f6fc",
        "bg": "#0d1117",
        "card": "#161b22",
        "font": "system-ui, sans-serif",
        "width": "1100px",
        "hero_padding": "5rem",
        "hero_align": "center",
    },
}
THEME_CHOICES = [(name, theme["label"]) for name, theme in THEMES.items()]

# Fixed source, never built from a payload: the only program a deploy job runs.
DEPLOY_SCRIPT = '''\
"""Deploy this release: verify every file against manifest.json, then point ../../current at this folder."""

import hashlib
import json
import os
import sys
from pathlib import Path

release = Path(__file__).resolve().parent
manifest = json.loads((release / "manifest.json").read_text())
for entry in manifest["files"]:
    data = (release / entry["path"]).read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        sys.exit(f"{entry['path']} does not match the manifest")
link = release.parent.parent / "current"
staging = link.with_name(f".current-{os.getpid()}")
staging.unlink(missing_ok=True)
staging.symlink_to(Path("releases") / release.name)
os.replace(staging, link)  # atomic: visitors see the old release or the new one, never neither
print(f"verified {len(manifest['files'])} files; current -> releases/{release.name}")
'''
SCRIPT_TIMEOUT = 60  # seconds


class DeployScriptFailed(Exception):
    """The deploy script exited with an error."""


@dataclass(frozen=True)
class SiteFile:
    path: str
    content: bytes

    def entry(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": len(self.content), "sha256": hashlib.sha256(self.content).hexdigest()}


def page_slug(title: str) -> str:
    return slugify(title)


def project_dir(owner_id: int | None, project: str) -> Path:
    return Path(settings.MEDIA_ROOT) / "sites" / str(owner_id or "anonymous") / project


def release_dir(owner_id: int | None, project: str, release: str) -> Path:
    return project_dir(owner_id, project) / "releases" / release


def render_site(payload: dict[str, Any], release: str) -> list[SiteFile]:
    """Every file of the site, rendered in memory (the deploy's manifest stage)."""
    theme = THEMES[payload["theme"]]
    domain = payload.get("custom_domain") or ""
    pages = [{"slug": "index", "title": "Home"}] + [
        {"slug": page_slug(title), "title": title} for title in payload.get("pages", [])
    ]
    site = {
        "title": payload["title"],
        "tagline": payload.get("tagline", ""),
        "theme": payload["theme"],
        "accent_color": payload["accent_color"],
        "domain": domain,
        "base_url": f"https://{domain}/" if domain else "/",
        "pages": pages,
        "release": release[:8],
    }
    context = {"site": site, "theme": theme}
    files = [
        SiteFile(f"{page['slug']}.html", render_to_string("demo/site/page.html", {**context, "page": page}).encode())
        for page in [*pages, {"slug": "404", "title": "Not found"}]
    ]
    files.append(SiteFile("style.css", render_to_string("demo/site/style.css", context).strip().encode() + b"\n"))
    files.append(SiteFile("sitemap.xml", render_to_string("demo/site/sitemap.xml", context).encode()))
    files.append(SiteFile("robots.txt", render_to_string("demo/site/robots.txt", context).strip().encode() + b"\n"))
    if domain:
        files.append(SiteFile("CNAME", f"{domain}\n".encode()))
    if payload.get("run_deploy_script"):
        files.append(SiteFile("deploy.py", DEPLOY_SCRIPT.encode()))
    return files


def manifest_bytes(payload: dict[str, Any], release: str, files: list[SiteFile]) -> bytes:
    manifest = {
        "release": release,
        "project": payload["project"],
        "theme": payload["theme"],
        "domain": payload.get("custom_domain") or None,
        "files": [f.entry() for f in files],
    }
    return json.dumps(manifest, indent=2).encode() + b"\n"


def prepare(folder: Path) -> None:
    """An empty release folder: a retried attempt starts over instead of mixing with the last one's files."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def write_file(folder: Path, site_file: SiteFile) -> None:
    target = folder / site_file.path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(site_file.content)


def run_deploy_script(folder: Path) -> str:
    """Run the release's deploy.py; its output, or DeployScriptFailed."""
    try:
        done = subprocess.run(
            [sys.executable, "-I", "deploy.py"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DeployScriptFailed(f"deploy.py did not finish within {SCRIPT_TIMEOUT} s.") from None
    if done.returncode != 0:
        raise DeployScriptFailed(f"deploy.py exited with code {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()
