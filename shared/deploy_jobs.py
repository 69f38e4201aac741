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

from shared.config import Settings
from shared.crypto import encrypt_env
from shared.deployment_status import COUNTS_FOR_QUOTA, INITIAL
from shared.models import Deployment
from shared.repo_urls import Repository, check_ref, parse_repo_url
from shared.submission import NewJob

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
    session: Session, settings: Settings, owner: uuid.UUID, repo_key: str
) -> None:
    """Refuse (TooManyDeployments) a deployment past QUOTA_ACTIVE_DEPLOYMENTS. A redeploy of
    the same repository replaces its predecessor, so that one does not count."""
    limit = settings.quota_active_deployments
    if not limit:
        return
    active = session.scalar(
        select(func.count())
        .select_from(Deployment)
        .where(
            Deployment.owner_id == owner,
            Deployment.status.in_(COUNTS_FOR_QUOTA),
            Deployment.repo_key != repo_key,
            Deployment.replaced_by.is_(None),
        )
    )
    if (active or 0) >= limit:
        raise TooManyDeployments(active or 0, limit)


@dataclass(frozen=True)
class DeployRequest:
    """A validated deploy request: the canonical repository, and the env already encrypted."""

    repo: Repository
    ref: str | None
    container_port: int | None
    health_path: str
    env_names: list[str]
    env_token: str | None

    @classmethod
    def parse(
        cls,
        settings: Settings,
        *,
        repo_url: str,
        ref: str | None,
        container_port: int | None,
        health_path: str,
        env: Mapping[str, str],
    ) -> DeployRequest:
        """Check the URL and ref (InvalidRepository says why not) and encrypt the env."""
        return cls(
            repo=parse_repo_url(repo_url, settings.deploy_allowed_hosts),
            ref=check_ref(ref),
            container_port=container_port,
            health_path=health_path,
            env_names=sorted(env),
            env_token=encrypt_env(dict(env), settings),  # encrypted at rest
        )

    @classmethod
    def stored(cls, settings: Settings, params: Mapping[str, Any]) -> DeployRequest:
        """The request a schedule stored (`stored_params`), validated when it was stored."""
        return cls(
            repo=parse_repo_url(params["repo_url"], settings.deploy_allowed_hosts),
            ref=params.get("ref"),
            container_port=params.get("container_port"),
            health_path=params["health_path"],
            env_names=list(params.get("env_names", [])),
            env_token=params.get(ENCRYPTED_ENV),
        )

    def stored_params(self) -> dict[str, Any]:
        """What a schedule stores: the job's own params and the env token, no plaintext."""
        return {
            "repo_url": self.repo.url,
            "ref": self.ref,
            "container_port": self.container_port,
            "health_path": self.health_path,
            "env_names": self.env_names,
            ENCRYPTED_ENV: self.env_token,
        }


@dataclass(frozen=True)
class DeployJob:
    """One deploy job to submit: its params, its Deployment row, its quota."""

    params: dict[str, Any]
    with_job: Callable[[Session, NewJob], None]
    kind_quota: Callable[[Session], None]


def deploy_job(settings: Settings, owner: uuid.UUID, request: DeployRequest) -> DeployJob:
    """The job of one deployment of `request` for `owner` (a new deployment id each time)."""
    deployment_id = uuid.uuid4()
    params = {
        "repo_url": request.repo.url,
        "ref": request.ref,
        "container_port": request.container_port,
        "health_path": request.health_path,
        "env_names": request.env_names,
        "deployment_id": str(deployment_id),
    }

    def add_deployment(session: Session, job: NewJob) -> None:
        session.add(
            Deployment(
                id=deployment_id,
                owner_id=owner,
                job_id=job.id,
                repo_url=request.repo.url,
                repo_key=request.repo.key,
                ref=request.ref,
                container_port=request.container_port,
                health_path=request.health_path,
                env=request.env_token,
                env_names=request.env_names,
                status=INITIAL.value,
            )
        )

    def kind_quota(session: Session) -> None:
        check_deployment_quota(session, settings, owner, request.repo.key)

    return DeployJob(params, add_deployment, kind_quota)


def public_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A stored request as a user may see it: without the env token."""
    return {key: value for key, value in params.items() if key != ENCRYPTED_ENV}
