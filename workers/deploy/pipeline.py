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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
from sqlalchemy import select, update

from shared import events
from shared.config import Settings
from shared.crypto import SecretsError, decrypt_env
from shared.db import session_scope
from shared.deployment_status import DeploymentStatus
from shared.errors import JobCancelled, JobError, PermanentJobError, RetryableJobError
from shared.jobs import now
from shared.models import Deployment
from shared.processors import JobContext, Processor
from shared.repo_urls import InvalidRepository, check_ref, parse_repo_url
from workers import sandbox
from workers.deploy import containers, git, networks
from workers.deploy.build import BuildLog, build, image_tag
from workers.deploy.health import wait_healthy
from workers.deploy.lifecycle import drop_image_unless_used, schedule_retire, settle_after_job
from workers.deploy.ports import lease_port, release_port
from workers.executors import Executor, register_executor
from workers.file_jobs import CancelWatch, save_log

log = logging.getLogger(__name__)
STEPS = 6


class Steps:
    """Times each step and records it as a job event."""

    def __init__(self, job_id: uuid.UUID, attempt: int) -> None:
        self.job_id = job_id
        self.attempt = attempt

    @contextlib.contextmanager
    def step(self, name: str, **data: Any):  # noqa: ANN201 - a context manager
        started = time.monotonic()
        extra: dict[str, Any] = {}
        outcome = "done"
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
            self._record(name, outcome, round(time.monotonic() - started, 3), {**data, **extra})

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
        session.expunge(deployment)
    steps = Steps(job_id, context.attempt)
    watch = CancelWatch(job_id, dispatch_id)
    undo: list[Callable[[], None]] = []

    def check_cancel() -> None:
        if watch():
            raise JobCancelled()

    try:
        return _pipeline(context, deployment, settings, steps, undo, check_cancel)
    except BaseException:
        for action in reversed(undo):
            try:
                action()
            except Exception:
                log.warning("undo step failed", exc_info=True, extra={"event": "undo_failed"})
        _update(deployment_id, container_id=None, host_port=None, url=None)
        raise


def _pipeline(
    context: JobContext,
    deployment: Deployment,
    settings: Settings,
    steps: Steps,
    undo: list[Callable[[], None]],
    check_cancel: Callable[[], None],
) -> dict[str, Any]:
    job_id = str(context.job_id)
    with steps.step("validate"):
        try:
            repo = parse_repo_url(deployment.repo_url, settings.deploy_allowed_hosts)
            ref = check_ref(deployment.ref)
        except InvalidRepository as error:
            raise PermanentJobError(error.code, error.message) from error
    context.progress(1, STEPS, "validated")
    client = sandbox.docker_client()
    build_log = BuildLog()
    with tempfile.TemporaryDirectory(prefix=git.CHECKOUT_PREFIX) as workdir:
        source = Path(workdir) / "src"
        with steps.step("clone") as info:
            commit = git.clone(repo, ref, source, settings)
            info["commit"] = commit
        _update(deployment.id, commit_sha=commit)
        context.progress(2, STEPS, f"cloned {commit[:12]}")
        tag = image_tag(repo, commit)
        # Recorded before the build: a starting deployment naming the tag holds it, so the
        # image-retention sweep cannot remove a tag this build is about to (re)use.
        _update(deployment.id, image=tag)
        with steps.step("build", image=tag):
            try:
                # RUN steps join the owner's network: isolated like the app (networks.py).
                network = networks.ensure(client, deployment.owner_id, settings)
                build(client, source, tag, settings, build_log, network=network)
            finally:
                save_log(
                    uuid.UUID(job_id), context.attempt, "build", build_log.text(),
                    build_log.truncated,
                )  # fmt: skip
                undo.append(lambda: drop_image_unless_used(client, tag, deployment.id))
    context.progress(3, STEPS, "built")
    with steps.step("allocate_port") as info:
        port = lease_port(deployment.id, settings)
        undo.append(lambda: release_port(deployment.id))
        info["port"] = port
    context.progress(4, STEPS, f"port {port}")
    container_port = deployment.container_port or containers.exposed_port(client, tag)
    with steps.step("run", container_port=container_port) as info:
        for stale in client.containers.list(
            all=True, filters={"label": f"{containers.LABEL_DEPLOYMENT}={deployment.id}"}
        ):  # left by an earlier attempt of this deployment whose worker died
            containers.remove(client, stale.id)
        container, port = start_on_leased_port(
            client, tag, deployment, job_id, container_port, port, settings
        )
        undo.append(lambda: containers.remove(client, container.id))
        info["port"] = port  # another one if the engine refused the first
        _update(
            deployment.id, container_id=container.id, host_port=port, container_port=container_port
        )
    context.progress(5, STEPS, "started; checking health")
    host = settings.deploy_health_host or settings.deploy_bind_address
    check_url = f"http://{host}:{port}{deployment.health_path}"
    with steps.step("health_check", path=deployment.health_path) as info:
        healthy, seen = wait_healthy(
            check_url,
            settings.deploy_health_timeout,
            lambda: containers.is_running(client, container.id),
            check_cancel,
        )
        info["result"] = seen
        if not healthy:
            tail = containers.logs_tail(client, container.id, 50)
            save_log(uuid.UUID(job_id), context.attempt, "app", tail, False)
            last_lines = "\n".join(tail.strip().splitlines()[-10:])
            raise PermanentJobError(
                "health_check_failed",
                f"{deployment.health_path} did not answer 2xx within "
                f"{settings.deploy_health_timeout:g} s ({seen}). Last lines of the app's log:\n"
                f"{last_lines}",
            )
    url = f"http://{settings.deploy_public_host}:{port}"
    with steps.step("report", url=url):
        _update(
            deployment.id, status=DeploymentStatus.HEALTHY.value, url=url,
            healthy_at=now(), checked_at=now(), error_code=None, error_message=None,
        )  # fmt: skip
        undo.clear()  # from here on the deployment is live; stopping it is a user's call
        replaced = schedule_retire(deployment, settings)
    context.progress(6, STEPS, "healthy")
    return {
        "deployment_id": str(deployment.id),
        "url": url,
        "commit": commit,
        "image": tag,
        "port": port,
        "replaced": [str(r) for r in replaced],
    }


def _after_outcome(job_id: uuid.UUID, outcome: str, _settings: Settings) -> None:
    """A deploy job that did not bring its deployment up settles it as failed or stopped."""
    if outcome not in ("failed", "dead", "cancelled"):
        return
    try:
        client = sandbox.docker_client()
    except RetryableJobError:
        client = None  # the periodic check removes what is left once the engine is back
    settle_after_job(job_id, client)


register_executor("deploy", Executor(run=run_deploy_job, after_outcome=_after_outcome))
