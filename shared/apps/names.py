"""App names: the platform-wide names apps are routed by (`<app>.<DEPLOY_DOMAIN>`).

A name is a DNS label the proxy can match: `[a-z][a-z0-9-]{1,30}`, and not ending in a hyphen.
A deploy without `app` gets a name derived from the repository and its owner, so the same
user's redeploys of a repository land on the same app, and two users deploying repositories
with the same name do not collide (the suffix is a hash of the owner and the repository).
"""

from __future__ import annotations

import hashlib
import re
import uuid

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
_UNSAFE = re.compile(r"[^a-z0-9]+")
#: Names the platform keeps for itself (its own hosts under DEPLOY_DOMAIN).
RESERVED = frozenset({"api", "www", "admin", "flower", "proxy", "dockyard", "hooks", "status"})
_SUFFIX = 6


class InvalidAppName(ValueError):
    """The name is not a usable app name; the message says why."""


def check_name(name: str) -> str:
    """The name as given when it is usable, else InvalidAppName."""
    if not NAME_PATTERN.match(name) or name.endswith("-") or "--" in name:
        raise InvalidAppName(
            "An app name is 2 to 31 lower-case letters, digits and single hyphens, starting "
            "with a letter and not ending with a hyphen."
        )
    if name in RESERVED:
        raise InvalidAppName(f"The name {name!r} is reserved by the platform.")
    return name


def derived_name(owner_id: uuid.UUID, repo_key: str) -> str:
    """`<repo>-<hash6>` for a deploy without `app`: stable for one owner and repository."""
    repo = repo_key.rsplit("/", 1)[-1]
    base = _UNSAFE.sub("-", repo.lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"app-{base}".rstrip("-")
    base = base[: 31 - _SUFFIX - 1].rstrip("-")
    digest = hashlib.sha256(f"{owner_id}:{repo_key}".encode()).hexdigest()[:_SUFFIX]
    return f"{base}-{digest}"
