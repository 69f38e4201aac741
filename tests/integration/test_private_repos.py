"""Private repositories: the deploy clone path given an app's access token, against a real git
smart-HTTP server that serves the repository only with it (HTTP Basic, the token as the
password, as GitHub takes one). The token opens the clone and is found nowhere else: not in
any process's arguments while git runs, not in the checkout or its `.git/config`, not in an
error message, and not stored by a credential helper configured on the host."""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from shared.config import Settings
from shared.deploy.repo_urls import Repository, parse_repo_url
from shared.errors import PermanentJobError
from tests.integration.git_repos import FakeGitHub, SlowGitHttpServer
from workers.deploy import git

TOKEN = f"dyk-test-{secrets.token_hex(16)}"
FAST = 10**9  # bytes a second: no noticeable delay


@dataclass
class PrivateRepo:
    github: FakeGitHub
    server: SlowGitHttpServer
    repo: Repository
    commit: str
    settings: Settings
    home: Path


@pytest.fixture()
def private(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Publish a repository and a factory routing it to a token-guarded HTTP server at a
    given rate. HOME is a fresh directory and the global git config asks git to store
    credentials there (`credential.helper = store`): a helper the clone must not feed."""
    github = FakeGitHub(tmp_path / "github")
    home = tmp_path / "home"
    home.mkdir()
    with github.gitconfig.open("a") as config:
        config.write("[credential]\n\thelper = store\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(github.gitconfig))
    monkeypatch.setenv("HOME", str(home))
    servers: list[SlowGitHttpServer] = []

    def make(rate: int = FAST, extra: dict[str, str] | None = None) -> PrivateRepo:
        commit = github.publish("private", fixture="webapp", extra=extra)
        server = SlowGitHttpServer(github, bytes_per_second=rate, token=TOKEN)
        servers.append(server)
        github.route("private", server.url)
        repo = parse_repo_url(github.url("private"), settings.deploy_allowed_hosts)
        # The stand-in is plain http on loopback (a real host is https, the default).
        local = replace(settings, deploy_git_protocols="https:http")
        return PrivateRepo(github, server, repo, commit, local, home)

    try:
        yield make
    finally:
        for server in servers:
            server.close()


def files_containing(root: Path, needle: str) -> list[Path]:
    """Every file under `root` (including git's metadata) whose bytes contain `needle`."""
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and needle.encode() in path.read_bytes()
    ]


def assert_nothing_stored(private: PrivateRepo) -> None:
    """No credential helper kept anything, and the global `store` helper would have."""
    credentials = private.home / ".git-credentials"
    assert not credentials.exists()
    subprocess.run(  # the control: the same environment does store what is approved
        ["git", "credential", "approve"],
        input="protocol=https\nhost=example.com\nusername=u\npassword=p\n\n",
        text=True,
        check=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )
    assert TOKEN not in credentials.read_text()


def test_with_the_token_the_clone_succeeds_and_leaves_it_nowhere(private, tmp_path) -> None:
    repo = private()
    dest = tmp_path / "src"
    assert git.clone(repo.repo, None, dest, repo.settings, TOKEN) == repo.commit
    assert (dest / "Dockerfile").is_file() and not (dest / ".git").exists()
    assert files_containing(dest, TOKEN) == []
    # The host asked (the first request went without credentials), git answered with the
    # token as the password of the fixed user name.
    assert repo.server.refused >= 1 and repo.server.users == {git.TOKEN_USER}
    assert_nothing_stored(repo)


@pytest.mark.parametrize("token", [None, f"wrong-{secrets.token_hex(8)}"], ids=["none", "wrong"])
def test_without_the_right_token_the_clone_is_unauthorized(private, tmp_path, token) -> None:
    repo = private()
    with pytest.raises(PermanentJobError) as raised:
        git.clone(repo.repo, None, tmp_path / "src", repo.settings, token)
    error = raised.value
    assert error.code == "clone_unauthorized", error.message
    assert "access_token" in error.message and "private" in error.message
    assert TOKEN not in error.message
    if token is not None:
        assert token not in error.message
    assert repo.server.refused >= 1
    assert not (repo.home / ".git-credentials").exists()


@pytest.mark.parametrize("by_commit", [False, True], ids=["branch", "commit"])
def test_the_checkout_and_its_git_config_never_hold_the_token(private, tmp_path, by_commit) -> None:
    """Before clone() removes `.git`: both ways of fetching (a clone of a branch, an init,
    remote and fetch of a commit id) leave a `.git/config` without the token."""
    repo = private()
    dest = tmp_path / "src"
    ref = repo.commit if by_commit else None
    git._fetch(repo.repo, ref, dest, repo.settings, time.monotonic() + 30, TOKEN)
    config = (dest / ".git" / "config").read_text()
    assert "127.0.0.1" in config or "github.com" in config  # the remote is recorded
    assert TOKEN not in config
    assert files_containing(dest, TOKEN) == []
    assert repo.server.users == {git.TOKEN_USER}


def test_the_token_is_in_no_process_arguments_during_a_clone(private, tmp_path) -> None:
    """A clone slowed to ~1.5 s; meanwhile every process's command line is read over and
    over: git and its helpers run (they are seen), the token is never among their arguments."""
    rate = 64 * 1024
    repo = private(rate=rate, extra={"blob.txt": os.urandom(rate).hex()})
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["commit"] = git.clone(repo.repo, None, tmp_path / "src", repo.settings, TOKEN)
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            result["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    scans = 0
    git_seen = False
    try:
        while thread.is_alive():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    arguments = cmdline.read_bytes()
                except OSError:  # the process ended meanwhile
                    continue
                assert TOKEN.encode() not in arguments, arguments
                git_seen = git_seen or arguments.startswith(b"git\0")
            scans += 1
    finally:
        thread.join()
    assert result.get("commit") == repo.commit, result
    assert git_seen and scans > 5, (git_seen, scans)
    assert repo.server.sent > rate  # the slow download the scans overlapped
    assert_nothing_stored(repo)
