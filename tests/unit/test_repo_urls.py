"""Repository URL and ref validation (pure logic; the API tests cover the HTTP answers)."""

from __future__ import annotations

import pytest

from shared.deploy.repo_urls import (
    InvalidRepository,
    check_ref,
    is_commit,
    looks_abbreviated,
    parse_repo_url,
)

HOSTS = ("github.com",)


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/octo/hello",
        "https://github.com/octo/hello.git",
        "https://GitHub.com/octo/hello/",
        "  https://github.com/octo/hello  ",
    ],
)
def test_accepted_spellings_canonicalise(url: str) -> None:
    repo = parse_repo_url(url, HOSTS)
    assert repo.url == "https://github.com/octo/hello"
    assert repo.key == "github.com/octo/hello"


def test_allowed_hosts_are_configurable() -> None:
    assert parse_repo_url("https://git.example.org/a/b", ("git.example.org",)).host == (
        "git.example.org"
    )
    with pytest.raises(InvalidRepository) as refused:
        parse_repo_url("https://github.com/a/b", ("git.example.org",))
    assert refused.value.code == "repo_host_not_allowed"


@pytest.mark.parametrize("ref", [None, "main", "v1.2.3", "feature/x-y", "0a1b2c3d"])
def test_good_refs(ref) -> None:
    assert check_ref(ref) == ref


@pytest.mark.parametrize("ref", ["-x", "--upload-pack=x", "a..b", "x.lock", "a//b", "", "é"])
def test_bad_refs(ref) -> None:
    with pytest.raises(InvalidRepository) as refused:
        check_ref(ref)
    assert refused.value.field == "ref"


def test_commit_detection() -> None:
    assert is_commit("f" * 40) and is_commit("0a" * 32)  # SHA-1 and SHA-256 ids
    # git fetches a commit only by its whole id; a shorter hex ref is a branch or tag name
    assert not is_commit("0a1b2c3") and not is_commit("f" * 39)
    assert not is_commit("main") and not is_commit("0a1b2c")
    assert looks_abbreviated("0a1b2c3") and not looks_abbreviated("main")
