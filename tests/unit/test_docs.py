"""The documentation holds together: the mkdocs site builds in strict mode (a link to a missing
page or anchor, or a page left out of the navigation, fails the build), every page under docs/
is in mkdocs.yml's nav, the README stays a short front door, and every repository path the
pages name in backticks exists (a moved module shows up here, not in a reader's dead end)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_BYTES = 12 * 1024


def nav_pages(entries: list[Any]) -> list[str]:
    """The page files of a mkdocs nav, however deeply its sections nest."""
    pages: list[str] = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            pages += nav_pages(value)
        else:
            pages.append(value)
    return pages


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()
    # The home page includes the README's overview (pymdownx.snippets), not a copy of it.
    assert "Celery worker fleets" in (tmp_path / "site" / "index.html").read_text()


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = nav_pages(config["nav"])
    on_disk = sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))
    assert sorted(listed) == on_disk
    assert len(listed) == len(set(listed)), "a page is listed twice"


def test_the_readme_is_at_most_12_kb() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail to docs/"


def test_the_readme_links_to_pages_that_exist() -> None:
    links = re.findall(r"\]\((docs/[^)#]+)", README.read_text())
    assert links, "the README's map of the docs is missing"
    for link in links:
        assert (ROOT / link).is_file(), link


# A backticked path: one of the repository's top-level directories, then a file or a folder.
PATH = re.compile(
    r"`((?:api|workers|shared|client|tests|bench|deploy|scripts|docs)/[A-Za-z0-9_./-]*)`"
)


@pytest.mark.parametrize("page", [README, *sorted(DOCS.rglob("*.md"))], ids=lambda path: path.name)
def test_the_paths_a_page_names_exist(page: Path) -> None:
    missing = sorted(
        {
            name
            for name in PATH.findall(page.read_text())
            if "<" not in name and not (ROOT / name.rstrip("/")).exists()
        }
    )
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"
