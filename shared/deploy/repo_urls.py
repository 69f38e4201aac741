"""Validation of the repository URLs and refs users ask to deploy.

Only `https://<allowed host>/<owner>/<repo>[.git]` is accepted. Everything else git would
happily follow is refused before git runs: other schemes and transports (`file://`, `ext::`,
`ssh`, `git://`, scp-like `host:path`), credentials in the URL, ports, queries, odd owner or
repository names, and refs that git could read as options or revision syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_REPO = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
# A commit is given by its full id (SHA-1, or SHA-256 repositories): git can fetch a commit
# by id only when the id is whole. A shorter hex string is tried as a branch or tag name.
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_ABBREVIATED_SHA = re.compile(r"^[0-9a-f]{7,39}$")


class InvalidRepository(ValueError):
    """The URL or ref is refused; `code` names why (shown to the user as the error code)."""

    def __init__(self, code: str, message: str, field: str = "repo_url") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Repository:
    host: str
    owner: str
    name: str

    @property
    def url(self) -> str:
        """The canonical clone URL (what git is given, whatever spelling the user sent)."""
        return f"https://{self.host}/{self.owner}/{self.name}"

    @property
    def key(self) -> str:
        """Identifies "the same repository" for redeploys: host/owner/name, lower case."""
        return f"{self.host}/{self.owner}/{self.name}".lower()


def parse_repo_url(raw: str, allowed_hosts: tuple[str, ...]) -> Repository:
    parts = _split_plain_https(raw)
    host = _allowed_host(parts, allowed_hosts)
    owner, name = _owner_and_name(parts)
    return Repository(host, owner, name)


def _split_plain_https(raw: str) -> SplitResult:
    """The URL's parts, once it is a plain https URL with no credentials in it."""
    url = (raw or "").strip()
    if "::" in url.split("/", 1)[0]:
        raise InvalidRepository("repo_url_scheme_refused", "Git transports like ext:: are refused.")
    if not url or len(url) > 300 or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidRepository("invalid_repo_url", "repo_url must be a plain https URL.")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced "[" of an IPv6 host: was a 500
        raise InvalidRepository("invalid_repo_url", "repo_url must be a plain https URL.") from None
    if parts.scheme.lower() != "https":
        raise InvalidRepository(
            "repo_url_scheme_refused",
            f"Only https URLs are accepted, not {parts.scheme or 'scp-like'} ones.",
        )
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidRepository(
            "repo_url_credentials_refused", "Credentials in repository URLs are refused."
        )
    return parts


def _allowed_host(parts: SplitResult, allowed_hosts: tuple[str, ...]) -> str:
    """The host, lower case, if it is one of `allowed_hosts` with no port given."""
    try:
        port = parts.port
    except ValueError:
        port = -1
    host = (parts.hostname or "").lower()
    if port is not None or host not in allowed_hosts:
        raise InvalidRepository(
            "repo_host_not_allowed",
            f"Repositories must be on {', '.join(allowed_hosts)}.",
        )
    return host


def _owner_and_name(parts: SplitResult) -> tuple[str, str]:
    """OWNER and REPO (without `.git`) of a path that is exactly /OWNER/REPO."""
    if parts.query or parts.fragment:
        raise InvalidRepository("invalid_repo_url", "repo_url must not have a query or fragment.")
    segments = parts.path.strip("/").split("/")
    if len(segments) != 2:
        raise InvalidRepository("invalid_repo_url", "repo_url must be https://HOST/OWNER/REPO.")
    owner, name = segments
    if name.endswith(".git"):
        name = name[:-4]
    if not _OWNER.match(owner) or not _REPO.match(name) or name in (".", "..") or "--" in owner:
        raise InvalidRepository("invalid_repo_name", "The owner or repository name is not valid.")
    if name.startswith(".") or name.startswith("-"):
        raise InvalidRepository("invalid_repo_name", "The owner or repository name is not valid.")
    return owner, name


def check_ref(ref: str | None) -> str | None:
    """A branch, tag or commit; None means the default branch."""
    if ref is None:
        return None
    if (
        not _REF.match(ref)
        or ".." in ref
        or "//" in ref
        or ref.endswith((".", "/", ".lock"))
        or "@{" in ref
    ):
        raise InvalidRepository(
            "invalid_ref", "ref must be a branch, tag or commit name.", field="ref"
        )
    return ref


def is_commit(ref: str) -> bool:
    return bool(_SHA.match(ref))


def looks_abbreviated(ref: str) -> bool:
    """A ref that is probably a shortened commit id (which git cannot fetch by itself)."""
    return bool(_ABBREVIATED_SHA.match(ref))
