"""The deploy limits' defaults are the ones docs/configuration.md promises: the integration
tests run with small values, so only this checks what an operator gets."""

from __future__ import annotations

import pytest

from shared.config import SETTINGS, load_settings
from shared.config_docs import PAGE

LIMITS = [
    "DEPLOY_REPLACE_GRACE",
    "DEPLOY_CLONE_TIMEOUT",
    "DEPLOY_MAX_REPO_BYTES",
    "DEPLOY_BUILD_TIMEOUT",
    "DEPLOY_BUILD_MEMORY",
    "DEPLOY_MEMORY",
    "DEPLOY_CPUS",
    "DEPLOY_PIDS",
    "DEPLOY_GIT_PROTOCOLS",
]


@pytest.mark.parametrize("variable", LIMITS)
def test_deploy_limit_defaults_match_the_configuration_page(variable: str) -> None:
    """The page's default cell, read back through the setting's own parser, is the value
    `load_settings` gives with nothing set."""
    (setting,) = [s for s in SETTINGS if s.env == variable]
    (row,) = [
        line for line in PAGE.read_text().splitlines() if line.startswith(f"| `{variable}` |")
    ]
    shown = row.split(" | ")[2]
    assert shown.startswith("`") and shown.endswith("`"), row
    loaded = getattr(load_settings({}), setting.attribute)
    assert setting.parser(variable, shown.strip("`")) == loaded
