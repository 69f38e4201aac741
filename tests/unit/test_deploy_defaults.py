"""The deploy limits' defaults are the ones the README's configuration table promises: the
integration tests run with small values, so only this checks what an operator gets."""

from __future__ import annotations

from shared.config import load_settings


def test_deploy_limit_defaults_match_the_readme() -> None:
    settings = load_settings({})
    assert settings.deploy_replace_grace == 10.0
    assert settings.deploy_clone_timeout == 120.0
    assert settings.deploy_max_repo_bytes == 209715200
    assert settings.deploy_build_timeout == 600.0
    assert settings.deploy_build_memory == 1073741824
    assert settings.deploy_memory == 536870912
    assert settings.deploy_cpus == 1.0
    assert settings.deploy_pids == 256
    assert settings.deploy_git_protocols == "https"
