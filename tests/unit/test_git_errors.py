"""How a failed git command is sorted, and where an access token may go (only git's
environment) and may not (its arguments, its configuration, an error message)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import load_settings
from shared.errors import PermanentJobError, RetryableJobError
from workers.deploy import git

TOKEN = "ghp_unitTestToken0123456789abcdef"
URL = "https://github.com/acme/private/"


@pytest.mark.parametrize(
    ("output", "code"),
    [
        # refused for credentials, as git 2.39 says it with and without a token
        (
            "error: unable to read askpass response from '/bin/false'\nfatal: could not read "
            f"Username for '{URL}': terminal prompts disabled",
            "clone_unauthorized",
        ),
        (f"fatal: Authentication failed for '{URL}'", "clone_unauthorized"),
        (
            f"remote: Invalid username or password.\nfatal: Authentication failed for '{URL}'",
            "clone_unauthorized",
        ),
        (
            f"fatal: unable to access '{URL}': The requested URL returned error: 403",
            "clone_unauthorized",
        ),
        (  # a refusal that also hung up is still a refusal, not a host to retry
            "error: RPC failed; HTTP 401 curl 22 The requested URL returned error: 401\n"
            "fatal: the remote end hung up unexpectedly",
            "clone_unauthorized",
        ),
        # everything sorted as before
        (
            f"fatal: unable to access '{URL}': Could not resolve host: github.com",
            "git_unreachable",
        ),
        (
            "error: RPC failed; HTTP 502 curl 22 The requested URL returned error: 502",
            "git_unreachable",
        ),
        ("warning: Could not find remote branch nope to clone.", "ref_not_found"),
        ("fatal: couldn't find remote ref refs/heads/nope", "ref_not_found"),
        ("remote: Repository not found.\nfatal: repository not found", "clone_failed"),
    ],
)
def test_failures_are_sorted_by_what_git_said(output: str, code: str) -> None:
    error = git._failure(output)
    assert error.code == code, error.message
    expected = RetryableJobError if code == "git_unreachable" else PermanentJobError
    assert isinstance(error, expected)
    if code == "clone_unauthorized":
        assert "access_token" in error.message and output in error.message


def test_without_a_token_git_gets_no_credentials_and_no_prompt() -> None:
    env = git._git_env(load_settings())
    assert env["GIT_ASKPASS"] == "/bin/false" and env["GIT_TERMINAL_PROMPT"] == "0"
    assert "DOCKYARD_GIT_TOKEN" not in env and "GIT_CONFIG_COUNT" not in env


def test_with_a_token_only_one_variable_holds_it() -> None:
    env = git._git_env(load_settings(), TOKEN)
    holding = [key for key, value in env.items() if TOKEN in value]
    assert holding == ["DOCKYARD_GIT_TOKEN"]
    helpers = [
        env[f"GIT_CONFIG_VALUE_{i}"]
        for i in range(int(env["GIT_CONFIG_COUNT"]))
        if env[f"GIT_CONFIG_KEY_{i}"] == "credential.helper"
    ]
    assert helpers[0] == ""  # clears every helper configured before (a global `store`)
    assert helpers[1:] == [git._TOKEN_HELPER]


def test_a_token_git_would_echo_is_scrubbed_from_the_error(monkeypatch) -> None:
    def failing_git(*_args: object) -> tuple[int, str, str]:
        return 128, "", f"fatal: Authentication failed for 'https://u:{TOKEN}@github.com/'"

    monkeypatch.setattr(git, "_git", failing_git)
    with pytest.raises(PermanentJobError) as raised:
        git._run(["clone"], None, load_settings(), 0.0, Path("/nonexistent"), TOKEN)
    assert raised.value.code == "clone_unauthorized"
    assert TOKEN not in raised.value.message and "[access token]" in raised.value.message
