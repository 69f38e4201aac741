"""One attempt of a deploy job: validate, clone, build, lease a port, run, check health,
report. Each step is an event with its duration. A failure at any step undoes the earlier
ones (container, image tag, port lease, clone directory), so an attempt leaks nothing.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
from cryptography.fernet import InvalidToken
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.apps.releases import decrypt_secret
from shared.apps.urls import app_url
from shared.config import Settings
from shared.db import session_scope
from shared.deploy import transitions
from shared.deploy.repo_urls import InvalidRepository, Repository, check_ref, parse_repo_url
from shared.deploy.status import LIVE, DeploymentStatus
from shared.errors import JobCancelled, JobError, PermanentJobError, RetryableJobError
from shared.jobs import events
from shared.models import App, Deployment
from shared.processors import JobContext, Processor
from shared.security.crypto import SecretsError, decrypt_env
from workers import sandbox
from workers.deploy import containers, git, live_log, networks
from workers.deploy.build import BuildLog, build, image_tag
from workers.deploy.health import wait_healthy
from workers.deploy.lifecycle import drop_image_unless_used, schedule_retire, settle_after_job
from workers.deploy.ports import lease_port, release_port
from workers.deploy.routes import sync_quietly
from workers.docker_errors import ENGINE_ERRORS, engine_failure
from workers.executors import Executor, register_executor
from workers.file_jobs import CancelWatch, save_log

log = logging.getLogger(__name__)
STEPS = 6


class Steps:
    """Times each step and records it as a job event, and as markers in the live log."""

    def __init__(self, job_id: uuid.UUID, attempt: int, live: live_log.LiveLog) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.live = live

    @contextlib.contextmanager
    def step(self, name: str, **data: Any) -> Iterator[dict[str, Any]]:
        started = time.monotonic()
        extra: dict[str, Any] = {}
        outcome = "done"
        self.live.begin(name)
        try:
            yield extra
        except JobError as error:
            # The step that failed is an event too: its duration and error show where and
            # how long a failed deploy spent its time.
            outcome = "failed"
            extra["error"] = {"code": error.code, "message": error.message[:500]}
            raise
        except BaseException:  # cancelled, or the worker is going down
            outcome = "interrupted"
            raise
        finally:
            seconds = round(time.monotonic() - started, 3)
            self.live.end(name, live_log.step_summary(name, outcome, seconds, {**data, **extra}))
            self._record(name, outcome, seconds, {**data, **extra})

    def _record(self, name: str, outcome: str, seconds: float, data: dict[str, Any]) -> None:
        try:
            with session_scope() as session:
                events.record(
                    session, self.job_id, "deploy_step", self.attempt,
                    step=name, seconds=seconds, outcome=outcome, **data,
                )  # fmt: skip
        except Exception:
            if outcome == "done":
                raise
            # The step's own error is what the attempt must report, not this one.
            log.warning("deploy step event not recorded", exc_info=True)
        log.info(
            "deploy step %s %s in %.2fs",
            name,
            outcome,
            seconds,
            extra={"event": "deploy_step", "step": name, "seconds": seconds},
        )


#: Ports tried per attempt when the engine refuses ports that looked free.
PORT_TRIES = 5


def start_on_leased_port(
    client: docker.DockerClient,
    tag: str,
    deployment: Deployment,
    job_id: str,
    container_port: int,
    port: int,
    settings: Settings,
) -> tuple[Any, int]:
    """Start the app on its leased port; if the engine finds that port taken (held by
    something the worker's own check cannot see: it runs in a container, or the engine is
    remote), lease another and try again. Returns the container and the port it got."""
    refused: set[int] = set()
    network = networks.ensure(client, deployment.owner_id, settings)
    try:
        env = decrypt_env(deployment.env, settings)
    except SecretsError as error:
        raise PermanentJobError("env_unreadable", str(error)) from error
    for _ in range(PORT_TRIES):
        try:
            container = containers.start(
                client, tag,
                deployment_id=str(deployment.id), job_id=job_id,
                container_port=container_port, host_port=port,
                env=env, network=network, settings=settings,
            )  # fmt: skip
            return container, port
        except containers.PortTaken:
            log.warning(
                "host port %d taken outside the platform; leasing another",
                port,
                extra={"event": "port_taken", "port": port},
            )
            refused.add(port)
            release_port(deployment.id)
            port = lease_port(deployment.id, settings, avoid=frozenset(refused))
    raise RetryableJobError(
        "no_free_port", f"The engine refused {PORT_TRIES} host ports: {sorted(refused)}."
    )


def _update(deployment_id: uuid.UUID, **values: Any) -> None:
    with session_scope() as session:
        session.execute(update(Deployment).where(Deployment.id == deployment_id).values(**values))


def run_deploy_job(
    context: JobContext,
    processor: Processor,
    params: dict[str, Any],
    dispatch_id: uuid.UUID,
    settings: Settings,
) -> dict[str, Any]:
    job_id = uuid.UUID(context.job_id)
    deployment_id = uuid.UUID(params["deployment_id"])
    with session_scope() as session:
        deployment = session.scalar(select(Deployment).where(Deployment.id == deployment_id))
        if deployment is None:
            raise PermanentJobError("deployment_missing", "The deployment record is gone.")
        if deployment.status != DeploymentStatus.STARTING:
            raise PermanentJobError(
                "deployment_not_startable", f"The deployment is already {deployment.status}."
            )
        app = session.get(App, deployment.app_id) if deployment.app_id else None
        target = AppTarget.of(app)
        session.expunge(deployment)
    steps = Steps(job_id, context.attempt, live_log.LiveLog(deployment_id, settings.redis_url))
    watch = CancelWatch(job_id, dispatch_id)
    undo: list[Callable[[], None]] = []

    def check_cancel() -> None:
        if watch():
            raise JobCancelled()

    try:
        return _pipeline(context, deployment, target, settings, steps, undo, check_cancel)
    except BaseException:
        for action in reversed(undo):
            try:
                action()
            except Exception:
                log.warning("undo step failed", exc_info=True, extra={"event": "undo_failed"})
        _update(deployment_id, container_id=None, host_port=None, url=None)
        raise
    finally:
        steps.live.close()  # the outcome line follows once the job's outcome is recorded


def _pipeline(
    context: JobContext,
    deployment: Deployment,
    target: AppTarget | None,
    settings: Settings,
    steps: Steps,
    undo: list[Callable[[], None]],
    check_cancel: Callable[[], None],
) -> dict[str, Any]:
    """The steps in order, each reporting its progress; each step adds its undo action. A
    rollback runs its release's kept image: no clone, no build."""
    repo, ref = _validate(deployment, settings, steps)
    context.progress(1, STEPS, "validated")
    # After validation: an invalid repository fails permanently even with the engine down.
    attempt = _Attempt(
        context, deployment, target, settings, steps, undo, check_cancel, sandbox.docker_client()
    )
    if deployment.rollback_of is not None and deployment.image and deployment.commit_sha:
        tag, commit = deployment.image, deployment.commit_sha
        _reuse_image(attempt, tag)
        context.progress(3, STEPS, f"reusing v{deployment.rollback_of}'s image")
    else:
        with tempfile.TemporaryDirectory(prefix=git.CHECKOUT_PREFIX) as workdir:
            source = Path(workdir) / "src"
            commit = _clone(attempt, repo, ref, source)
            context.progress(2, STEPS, f"cloned {commit[:12]}")
            tag = image_tag(repo, commit)
            _build(attempt, source, tag)
        context.progress(3, STEPS, "built")
    port = _allocate_port(attempt)
    context.progress(4, STEPS, f"port {port}")
    container_id, port = _start(attempt, tag, port)
    context.progress(5, STEPS, "started; checking health")
    _check_health(attempt, container_id, port)
    url, replaced = _report(attempt, port)
    context.progress(6, STEPS, "healthy")
    return {
        "deployment_id": str(deployment.id),
        "app": target.name if target else None,
        "release": deployment.release,
        "url": url,
        "commit": commit,
        "image": tag,
        "port": port,
        "replaced": [str(r) for r in replaced],
    }


@dataclass(frozen=True)
class AppTarget:
    """The app a deployment is a release of, as the attempt read it at its start."""

    id: uuid.UUID
    name: str
    access_token: str | None  # the stored Fernet token; decrypted only for the clone

    @classmethod
    def of(cls, app: App | None) -> AppTarget | None:
        return None if app is None else cls(app.id, app.name, app.access_token)


@dataclass(frozen=True)
class _Attempt:
    """What every step of one attempt uses: the job, the deployment it brings up, the
    step recorder, the undo list the steps append to, and the engine."""

    context: JobContext
    deployment: Deployment
    target: AppTarget | None
    settings: Settings
    steps: Steps
    undo: list[Callable[[], None]]
    check_cancel: Callable[[], None]
    client: docker.DockerClient

    @property
    def job_id(self) -> uuid.UUID:
        return uuid.UUID(self.context.job_id)


def _validate(
    deployment: Deployment, settings: Settings, steps: Steps
) -> tuple[Repository, str | None]:
    """The repository URL (an allowed host) and the ref, checked again at run time."""
    with steps.step("validate"):
        try:
            return (
                parse_repo_url(deployment.repo_url, settings.deploy_allowed_hosts),
                check_ref(deployment.ref),
            )
        except InvalidRepository as error:
            raise PermanentJobError(error.code, error.message) from error


def _clone(attempt: _Attempt, repo: Repository, ref: str | None, source: Path) -> str:
    """Clone the ref into `source`; returns the commit, recorded on the deployment."""
    token = None
    if attempt.target is not None and attempt.target.access_token:
        try:
            token = decrypt_secret(attempt.target.access_token, attempt.settings)
        except InvalidToken as error:
            raise PermanentJobError(
                "access_token_unreadable",
                "The app's access token cannot be decrypted with DEPLOY_SECRETS_KEY; set it "
                "again (PATCH /apps/{app}).",
            ) from error
    with attempt.steps.step("clone") as info:
        commit = git.clone(repo, ref, source, attempt.settings, token=token)
        info["commit"] = commit
    _update(attempt.deployment.id, commit_sha=commit)
    return commit


def _build(attempt: _Attempt, source: Path, tag: str) -> None:
    """Build the image `tag` from the checkout; the build log is saved however it ends."""
    deployment, client = attempt.deployment, attempt.client
    # Recorded before the build: a starting deployment naming the tag holds it, so the
    # image-retention sweep cannot remove a tag this build is about to (re)use.
    _update(deployment.id, image=tag)
    build_log = BuildLog(listener=attempt.steps.live.output)  # the live log sees it as it comes
    with attempt.steps.step("build", image=tag):
        try:
            # RUN steps join the owner's network: isolated like the app (networks.py).
            network = networks.ensure(client, deployment.owner_id, attempt.settings)
            build(client, source, tag, attempt.settings, build_log, network=network)
        finally:
            save_log(
                attempt.job_id, attempt.context.attempt, "build", build_log.text(),
                build_log.truncated,
            )  # fmt: skip
            attempt.undo.append(lambda: drop_image_unless_used(client, tag, deployment.id))


def _reuse_image(attempt: _Attempt, tag: str) -> None:
    """A rollback: the release's image must still be on the engine (kept by the retention
    sweep for the last DEPLOY_KEEP_RELEASES releases)."""
    with attempt.steps.step("reuse_image", image=tag, rollback_of=attempt.deployment.rollback_of):
        try:
            attempt.client.images.get(tag)
        except docker.errors.ImageNotFound as error:
            raise PermanentJobError(
                "release_image_gone",
                f"The image {tag} of release v{attempt.deployment.rollback_of} is gone; "
                "deploy its commit instead.",
            ) from error
        except ENGINE_ERRORS as error:
            raise engine_failure(error) from error


def _allocate_port(attempt: _Attempt) -> int:
    deployment_id = attempt.deployment.id
    with attempt.steps.step("allocate_port") as info:
        port = lease_port(deployment_id, attempt.settings)
        attempt.undo.append(lambda: release_port(deployment_id))
        info["port"] = port
    return port


def _start(attempt: _Attempt, tag: str, port: int) -> tuple[str, int]:
    """Start the app's container; returns its id and the host port it got (another one if
    the engine refused the leased port)."""
    deployment, client = attempt.deployment, attempt.client
    container_port = deployment.container_port or containers.exposed_port(client, tag)
    with attempt.steps.step("run", container_port=container_port) as info:
        for stale in client.containers.list(
            all=True, filters={"label": f"{containers.LABEL_DEPLOYMENT}={deployment.id}"}
        ):  # left by an earlier attempt of this deployment whose worker died
            containers.remove(client, stale.id)
        container, port = start_on_leased_port(
            client, tag, deployment, str(attempt.context.job_id), container_port, port,
            attempt.settings,
        )  # fmt: skip
        attempt.undo.append(lambda: containers.remove(client, container.id))
        info["port"] = port  # another one if the engine refused the first
        _update(
            deployment.id, container_id=container.id, host_port=port, container_port=container_port
        )
    return container.id, port


def _check_health(attempt: _Attempt, container_id: str, port: int) -> None:
    """Wait for the health path to answer 2xx; if it does not in time, the app's last log
    lines are saved and quoted in the error."""
    deployment, settings, client = attempt.deployment, attempt.settings, attempt.client
    host = settings.deploy_health_host or settings.deploy_bind_address
    check_url = f"http://{host}:{port}{deployment.health_path}"
    with attempt.steps.step("health_check", path=deployment.health_path) as info:
        with live_log.following(client, container_id, attempt.steps.live):
            healthy, seen = wait_healthy(
                check_url,
                settings.deploy_health_timeout,
                lambda: containers.is_running(client, container_id),
                attempt.check_cancel,
            )
        info["result"] = seen
        if not healthy:
            tail = containers.logs_tail(client, container_id, 50)
            save_log(attempt.job_id, attempt.context.attempt, "app", tail, False)
            last_lines = "\n".join(tail.strip().splitlines()[-10:])
            raise PermanentJobError(
                "health_check_failed",
                f"{deployment.health_path} did not answer 2xx within "
                f"{settings.deploy_health_timeout:g} s ({seen}). Last lines of the app's log:\n"
                f"{last_lines}",
            )


def _report(attempt: _Attempt, port: int) -> tuple[str, list[uuid.UUID]]:
    """Mark the deployment healthy, make it its app's current release and switch the
    proxy's route to it (the atomic switch: from the next request on, the app's URL is
    served by this release), then schedule the retirement of the ones it replaces after
    DEPLOY_REPLACE_GRACE (requests already sent to them finish). Returns the URL and the
    replaced deployments."""
    deployment, settings = attempt.deployment, attempt.settings
    url = (
        app_url(attempt.target.name, settings)
        if attempt.target is not None
        else f"http://{settings.deploy_public_host}:{port}"
    )
    with attempt.steps.step("report", url=url):
        _mark_healthy(deployment, url)
        attempt.undo.clear()  # from here on the deployment is live; stopping it is a user's call
        sync_quietly(settings)
        replaced = schedule_retire(deployment, settings)
    return url, replaced


def _mark_healthy(deployment: Deployment, url: str) -> None:
    """starting -> healthy (shared.deploy.transitions.mark_healthy: a webhook event,
    recorded with the change, sent after the commit), and the app's current release in the
    same transaction. An app deleted while this release was starting fails it: nothing
    would route to it."""
    with session_scope() as session:
        row = session.get(Deployment, deployment.id, with_for_update=True)
        if row is None:
            raise PermanentJobError("deployment_missing", "The deployment record is gone.")
        if deployment.app_id is not None and row.app_id is None:
            raise PermanentJobError("app_deleted", "The app was deleted during the deploy.")
        app = session.get(App, row.app_id, with_for_update=True) if row.app_id else None
        healthy = transitions.mark_healthy(session, row, url)
        if app is not None and _newer_than_current(session, app, row):
            app.current_deployment_id = row.id
    healthy.apply()


def _newer_than_current(session: Session, app: App, release: Deployment) -> bool:
    """A release becomes current unless a later release of the app is already live (two
    deploys racing: the later release number wins, whichever finishes first)."""
    if app.current_deployment_id is None:
        return True
    current = session.get(Deployment, app.current_deployment_id)
    if current is None or current.status not in LIVE or current.release is None:
        return True
    return (release.release or 0) > current.release


def _after_outcome(job_id: uuid.UUID, outcome: str, _settings: Settings) -> None:
    """A deploy job that did not bring its deployment up settles it as failed or stopped
    (which writes the live log's outcome); one that did writes its outcome here."""
    if outcome == "succeeded":
        live_log.record_outcome(job_id)
    if outcome not in ("failed", "dead", "cancelled"):
        return
    try:
        client = sandbox.docker_client()
    except RetryableJobError:
        client = None  # the periodic check removes what is left once the engine is back
    settle_after_job(job_id, client)


register_executor("deploy", Executor(run=run_deploy_job, after_outcome=_after_outcome))
