"""Building a deploy job: what `POST /jobs/deploy` and a deploy schedule's occurrences share.

A deploy job is a job plus its Deployment row (added in the job's transaction through the
submission's `with_job`) and a quota of its own (active deployments per user, checked under
the submit's per-user lock). The endpoint builds it from a request body; a schedule from the
request it stored, whose env is kept as the Fernet token a deployment holds, so an
occurrence hands the token on as it is and the values are never decrypted to make a job.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.apps import releases as apps
from shared.apps.names import derived_name
from shared.config import Settings
from shared.deploy.repo_urls import Repository, check_ref, parse_repo_url
from shared.deploy.status import COUNTS_FOR_QUOTA, INITIAL
from shared.jobs.submission import NewJob
from shared.models import App, Deployment
from shared.security.crypto import encrypt_env

#: The key of a stored deploy request's encrypted env (never shown: only `env_names` is).
ENCRYPTED_ENV = "env_encrypted"


class TooManyDeployments(Exception):
    """The owner already has QUOTA_ACTIVE_DEPLOYMENTS active deployments (of other repos)."""

    code = "too_many_deployments"

    def __init__(self, active: int, limit: int) -> None:
        self.active = active
        self.limit = limit
        self.message = (
            f"You already have {active} active deployments (limit {limit}); stop one first."
        )
        super().__init__(self.message)


def check_deployment_quota(
    session: Session, settings: Settings, owner: uuid.UUID, app_name: str
) -> None:
    """Refuse (TooManyDeployments) a deployment past QUOTA_ACTIVE_DEPLOYMENTS. A new release
    of an app replaces its predecessor, so the app's own deployments do not count."""
    limit = settings.quota_active_deployments
    if not limit:
        return
    same_app = select(App.id).where(App.name == app_name).scalar_subquery()
    active = session.scalar(
        select(func.count())
        .select_from(Deployment)
        .where(
            Deployment.owner_id == owner,
            Deployment.status.in_(COUNTS_FOR_QUOTA),
            # A deployment of no app (its app deleted) is never the same app.
            Deployment.app_id.is_(None) | Deployment.app_id.is_distinct_from(same_app),
            Deployment.replaced_by.is_(None),
        )
    )
    if (active or 0) >= limit:
        raise TooManyDeployments(active or 0, limit)


@dataclass(frozen=True)
class DeployRequest:
    """A validated deploy request: the canonical repository, the env already encrypted, and
    the app it is a release of (None: the name derived from the repository and owner).
    None in ref, health_path, container_port or env means "as the app has it"."""

    repo: Repository
    ref: str | None
    container_port: int | None
    health_path: str | None
    env_names: list[str] | None
    env_token: str | None
    app: str | None = None
    access_token: str | None = None

    @classmethod
    def parse(
        cls,
        settings: Settings,
        *,
        repo_url: str,
        ref: str | None,
        container_port: int | None,
        health_path: str | None,
        env: Mapping[str, str] | None,
        app: str | None = None,
        access_token: str | None = None,
    ) -> DeployRequest:
        """Check the URL and ref (InvalidRepository says why not) and encrypt the env."""
        return cls(
            repo=parse_repo_url(repo_url, settings.deploy_allowed_hosts),
            ref=check_ref(ref),
            container_port=container_port,
            health_path=health_path,
            env_names=None if env is None else sorted(env),
            env_token=None if env is None else encrypt_env(dict(env), settings),
            app=app,
            access_token=access_token,
        )

    @classmethod
    def stored(cls, settings: Settings, params: Mapping[str, Any]) -> DeployRequest:
        """The request a schedule stored (`stored_params`), validated when it was stored."""
        has_env = "env_names" in params and params.get(ENCRYPTED_ENV) is not None
        return cls(
            repo=parse_repo_url(params["repo_url"], settings.deploy_allowed_hosts),
            ref=params.get("ref"),
            container_port=params.get("container_port"),
            health_path=params.get("health_path"),
            env_names=list(params.get("env_names", [])) if has_env else None,
            env_token=params.get(ENCRYPTED_ENV),
            app=params.get("app"),
        )

    @classmethod
    def next_release(
        cls, settings: Settings, app_name: str, repo_url: str, ref: str | None = None
    ) -> DeployRequest:
        """A release of an existing app with everything as the app has it (a rollback, a
        push hook's commit); InvalidRepository if its host is no longer allowed."""
        return cls(
            repo=parse_repo_url(repo_url, settings.deploy_allowed_hosts),
            ref=ref,
            container_port=None,
            health_path=None,
            env_names=None,
            env_token=None,
            app=app_name,
        )

    def stored_params(self) -> dict[str, Any]:
        """What a schedule stores: the job's own params and the env token, no plaintext."""
        stored = {
            "repo_url": self.repo.url,
            "ref": self.ref,
            "container_port": self.container_port,
            "health_path": self.health_path,
            "env_names": self.env_names or [],
            ENCRYPTED_ENV: self.env_token,
        }
        return stored | ({"app": self.app} if self.app else {})

    def app_name(self, owner: uuid.UUID) -> str:
        return self.app or derived_name(owner, self.repo.key)

    def release_settings(self) -> apps.ReleaseSettings:
        return apps.ReleaseSettings(
            repo=self.repo,
            ref=self.ref,
            health_path=self.health_path,
            container_port=self.container_port,
            env_names=self.env_names,
            env_token=self.env_token,
            access_token=self.access_token,
        )


@dataclass(frozen=True)
class Rollback:
    """A release whose kept image a rollback runs again (no clone, no build)."""

    release: int
    image: str
    commit: str


@dataclass(frozen=True)
class DeployJob:
    """One deploy job to submit: its params, its Deployment row, its quota."""

    params: dict[str, Any]
    with_job: Callable[[Session, NewJob], None]
    kind_quota: Callable[[Session], None]


def deploy_job(
    settings: Settings,
    owner: uuid.UUID,
    request: DeployRequest,
    rollback: Rollback | None = None,
) -> DeployJob:
    """The job of the next release of the request's app for `owner` (a new deployment id
    each time). The app is claimed (or created) and numbered in the job's transaction, so a
    refused submit leaves no app and no release number behind."""
    deployment_id = uuid.uuid4()
    name = request.app_name(owner)
    params = {
        "repo_url": request.repo.url,
        "ref": request.ref,
        "container_port": request.container_port,
        "health_path": request.health_path,
        "env_names": request.env_names or [],
        "app": name,
        "deployment_id": str(deployment_id),
    }
    if rollback is not None:
        params["rollback_of"] = rollback.release

    def add_deployment(session: Session, job: NewJob) -> None:
        app = apps.claim(session, owner, name, request.release_settings())
        release = apps.new_release(app)
        session.add(
            Deployment(
                id=deployment_id,
                owner_id=owner,
                job_id=job.id,
                app_id=app.id,
                release=release,
                rollback_of=rollback.release if rollback else None,
                repo_url=app.repo_url,
                repo_key=app.repo_key,
                ref=rollback.commit if rollback else (request.ref or app.branch),
                commit_sha=rollback.commit if rollback else None,
                image=rollback.image if rollback else None,
                container_port=app.container_port,
                health_path=app.health_path,
                env=app.env,
                env_names=app.env_names,
                status=INITIAL.value,
            )
        )

    def kind_quota(session: Session) -> None:
        check_deployment_quota(session, settings, owner, name)

    return DeployJob(params, add_deployment, kind_quota)


def public_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A stored request as a user may see it: without the env token."""
    return {key: value for key, value in params.items() if key != ENCRYPTED_ENV}
