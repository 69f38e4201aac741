"""Checkouts a killed deploy worker left behind are removed once no deploy can still use them."""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared.config import load_settings
from workers.deploy.git import CHECKOUT_PREFIX, remove_stale_checkouts


def make(root: Path, name: str, age_seconds: float, directory: bool = True) -> Path:
    path = root / name
    if directory:
        (path / "src").mkdir(parents=True)
        (path / "src" / "Dockerfile").write_text("FROM scratch\n")
    else:
        path.write_text("not a checkout")
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def test_only_checkouts_older_than_any_deploy_are_removed(tmp_path: Path) -> None:
    settings = load_settings()
    longest = 2 * (settings.deploy_clone_timeout + settings.deploy_build_timeout) + 600
    stale = [make(tmp_path, f"{CHECKOUT_PREFIX}{i}", longest + 60) for i in range(3)]
    running = make(tmp_path, f"{CHECKOUT_PREFIX}running", longest - 60)
    other = make(tmp_path, "someone-else", longest * 2)
    a_file = make(tmp_path, f"{CHECKOUT_PREFIX}file", longest * 2, directory=False)

    assert remove_stale_checkouts(settings, limit=2, root=tmp_path) == 2  # bounded per run
    assert remove_stale_checkouts(settings, limit=2, root=tmp_path) == 1
    assert not any(path.exists() for path in stale)
    assert running.exists() and other.exists() and a_file.exists()
    assert remove_stale_checkouts(settings, limit=2, root=tmp_path) == 0
