"""Apps: claiming a name, what a release inherits from its app, and which releases keep
their image.

A deploy names an app (or gets the derived name, shared/apps/names.py). The first deploy of a
name creates the app for its user; a deploy by anyone else answers 409 app_name_taken. Each
deploy is the app's next release (`last_release + 1`, under the app row's lock, in the
deploy job's own transaction). What the deploy leaves out (ref, health_path, container_port,
env) comes from the app; what it gives is remembered for the next release.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.deploy.repo_urls import Repository, is_commit
from shared.deploy.status import DeploymentStatus
from shared.errors import DomainError
from shared.models import App, Deployment
from shared.security.crypto import cipher


class AppNameTaken(DomainError):
    """Another user holds the name (HTTP 409)."""

    status = 409
    code = "app_name_taken"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"The app name {name!r} is taken; choose another.", details={"app": name})


@dataclass(frozen=True)
class ReleaseSettings:
    """What one deploy asks of its app; None means "as the app has it"."""

    repo: Repository
    ref: str | None
    health_path: str | None
    container_port: int | None
    env_names: list[str] | None
    env_token: str | None
    access_token: str | None = None  # plaintext; encrypted when stored


def claim(session: Session, owner: uuid.UUID, name: str, wanted: ReleaseSettings) -> App:
    """The app `name` locked for this transaction, created for `owner` when new, with what
    `wanted` gives remembered; AppNameTaken when another user holds the name."""
    session.execute(
        insert(App)
        .values(
            id=uuid.uuid4(),
            name=name,
            owner_id=owner,
            repo_url=wanted.repo.url,
            repo_key=wanted.repo.key,
            auto_deploy=True,
            health_path="/",
            env_names=[],
            last_release=0,
        )
        .on_conflict_do_nothing(index_elements=["name"])
    )
    app = session.scalar(select(App).where(App.name == name).with_for_update())
    if app is None or app.owner_id != owner:
        raise AppNameTaken(name)
    app.repo_url, app.repo_key = wanted.repo.url, wanted.repo.key
    if wanted.ref is not None and not is_commit(wanted.ref):
        app.branch = wanted.ref  # a branch or tag is remembered; a pinned commit is not
    if wanted.health_path is not None:
        app.health_path = wanted.health_path
    if wanted.container_port is not None:
        app.container_port = wanted.container_port
    if wanted.env_names is not None:
        app.env, app.env_names = wanted.env_token, wanted.env_names
    if wanted.access_token is not None:
        app.access_token = encrypt_secret(wanted.access_token) if wanted.access_token else None
    return app


def encrypt_secret(value: str, settings: Settings | None = None) -> str:
    """A write-only secret (access token, webhook secret) as stored: a Fernet token."""
    return cipher(settings).encrypt(value.encode()).decode()


def decrypt_secret(token: str | None, settings: Settings | None = None) -> str | None:
    return None if token is None else cipher(settings).decrypt(token.encode()).decode()


def new_release(app: App) -> int:
    """The next release number of a locked app."""
    app.last_release += 1
    return app.last_release


def image_kept(deployment: Deployment) -> bool:
    """Whether a release's image is still there to roll back to: built, not failed, not
    yet released by the retention sweep (which keeps the last DEPLOY_KEEP_RELEASES)."""
    return (
        deployment.image is not None
        and deployment.commit_sha is not None
        and deployment.image_released_at is None
        and deployment.status != DeploymentStatus.FAILED
        and (deployment.status != DeploymentStatus.STARTING or deployment.rollback_of is not None)
    )
