"""A deployment after its deploy job: replacement of the previous one, stop, the settling of
deployments whose job ended, and the periodic check that reconciles everything.

The check handles at most SWEEP_BATCH_SIZE deployments per part and run, oldest check first:
each health probe is an HTTP request and each reconciliation a Docker API call, so an
unbounded run after an outage could hold the deploy fleet for minutes; short bounded runs
every DEPLOY_CHECK_INTERVAL catch up within a few periods.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

import docker
import requests
from docker.errors import DockerException
from requests.exceptions import ConnectionError as RequestsConnectionError
from sqlalchemy import ColumnElement, delete, or_, select, update

from shared.clock import now
from shared.config import Settings
from shared.db import session_scope
from shared.deploy import transitions
from shared.deploy.status import ACTIVE, ENDED, HOLDS_PORT, LIVE, DeploymentStatus
from shared.dispatch import queues
from shared.errors import RetryableJobError
from shared.jobs.status import JobStatus
from shared.models import App, Deployment, Job, PortLease
from workers.deploy import containers, firewall, git, live_log, networks, routes
from workers.deploy.ports import release_port
from workers.docker_errors import ENGINE_ERRORS, engine_failure

log = logging.getLogger(__name__)

TASK_STOP = queues.TASK_DEPLOY_STOP
TASK_CHECK = queues.TASK_DEPLOY_CHECK


def image_in_use(tag: str, except_id: uuid.UUID) -> bool:
    """Another deployment runs the tag, or still holds it: a stopped release kept for a
    rollback or a cached redeploy (a failed rollback must not take its release's image)."""
    with session_scope() as session:
        return (
            session.scalar(
                select(Deployment.id).where(
                    Deployment.image == tag,
                    Deployment.id != except_id,
                    or_(
                        Deployment.status.in_(ACTIVE),
                        (Deployment.status == DeploymentStatus.STOPPED)
                        & Deployment.image_released_at.is_(None),
                    ),
                )
            )
            is not None
        )


def kept_release(settings: Settings) -> ColumnElement[bool]:
    """A deployment among its app's last DEPLOY_KEEP_RELEASES releases: its image is kept
    for a rollback, whatever its age."""
    last = select(App.last_release).where(App.id == Deployment.app_id).scalar_subquery()
    return Deployment.app_id.is_not(None) & (
        Deployment.release > last - settings.deploy_keep_releases
    )


def drop_image_unless_used(client: docker.DockerClient, tag: str, deployment_id: uuid.UUID) -> None:
    """Remove a deployment's image tag unless another active deployment runs that image."""
    if not image_in_use(tag, deployment_id):
        containers.remove_image(client, tag)


def schedule_retire(deployment: Deployment, settings: Settings) -> list[uuid.UUID]:
    """The new release is healthy and routed: the app's earlier live releases are retired
    after the grace period (requests the proxy already sent them finish)."""
    same_app = (
        Deployment.app_id == deployment.app_id
        if deployment.app_id is not None
        else (Deployment.owner_id == deployment.owner_id)
        & (Deployment.repo_key == deployment.repo_key)
    )
    with session_scope() as session:
        olds = list(
            session.scalars(
                select(Deployment)
                .where(
                    same_app,
                    Deployment.id != deployment.id,
                    Deployment.status.in_(LIVE),
                    Deployment.replaced_by.is_(None),
                )
                .with_for_update()
            )
        )
        effects = transitions.Effects()
        for old in olds:
            effects.merge(transitions.retire(old, deployment.id, settings.deploy_replace_grace))
    effects.apply()  # a lost message: the periodic check retires it once retire_at has passed
    return [old.id for old in olds]


def stop_deployment(deployment_id: uuid.UUID, client: docker.DockerClient) -> str | None:
    """Stop and remove the container, release the port, mark `stopped`. Idempotent. The
    image is kept for DEPLOY_IMAGE_RETENTION (a redeploy of the commit is then a cached
    build; `release_stopped_images` removes it later); failed deploys remove theirs at once."""
    with session_scope() as session:
        deployment = session.get(Deployment, deployment_id, with_for_update=True)
        if deployment is None or deployment.status in ENDED:
            return None if deployment is None else deployment.status
        if deployment.status == DeploymentStatus.STARTING:
            return deployment.status  # its job is still running; it settles when the job ends
        try:
            containers.remove(client, deployment.container_id)
        except ENGINE_ERRORS as error:
            # Rolled back: the deployment stays `stopping`; the stop task retries, and the
            # periodic check finishes stops older than a minute.
            raise engine_failure(error) from error
        stopped = transitions.finish_stop(session, deployment)
        owner_id = deployment.owner_id
    stopped.apply()
    _drop_network(client, owner_id)
    # A stopped current release leaves its app answering 503; a deleted app's route goes.
    routes.sync_quietly()
    # The image stays: a redeploy or a rollback of the same commit then starts from cache.
    log.info(
        "deployment stopped",
        extra={"event": "deployment_stopped", "deployment_id": str(deployment_id)},
    )
    return DeploymentStatus.STOPPED.value


def _drop_network(client: docker.DockerClient, owner_id: uuid.UUID) -> None:
    """The owner's last deployment ended: their network goes too (each takes one of the
    engine's address pools). A failure is left to the periodic check."""
    try:
        networks.remove_if_unused(client, owner_id)
    except (DockerException, RequestsConnectionError):
        log.warning("deploy network not removed", exc_info=True)


def settle_after_job(job_id: uuid.UUID, client: docker.DockerClient | None = None) -> None:
    """A deploy job ended: a deployment it did not bring up is `failed` (or `stopped` when
    the job was cancelled), its port lease is released and, with a client, its container
    and image tag are removed (left behind when its worker died mid-deploy)."""
    settled = _settle(job_id)
    if settled is None:
        return
    effects, (container_id, tag, deployment_id, owner_id) = settled
    effects.apply()
    live_log.record_outcome(job_id)  # the last line of the deployment's live log
    if client is not None:
        containers.remove(client, container_id)
        # Before the image: a container its row does not name would keep the tag in use.
        containers.remove_for_deployment(client, str(deployment_id))
        if tag:
            drop_image_unless_used(client, tag, deployment_id)
        _drop_network(client, owner_id)


_Leftovers = tuple[str | None, str | None, uuid.UUID, uuid.UUID]


def _settle(job_id: uuid.UUID) -> tuple[transitions.Effects, _Leftovers] | None:
    """Settle the job's deployment (shared.deploy.transitions.settle) and commit; its
    effects and what it leaves on the engine (container, image tag, ids), or None."""
    with session_scope() as session:
        row = session.execute(
            select(Deployment, Job.status, Job.error_code, Job.error_message)
            .join(Job, Job.id == Deployment.job_id)
            .where(Deployment.job_id == job_id)
            .with_for_update(of=Deployment)
        ).first()
        if row is None:
            return None
        deployment, job_status, code, message = row
        effects = transitions.settle(session, deployment, job_status, code, message)
        if effects is None:
            return None
        leftovers = (deployment.container_id, deployment.image, deployment.id, deployment.owner_id)
        deployment.container_id = None
    return effects, leftovers


def _probe(deployment: Deployment, client: docker.DockerClient, settings: Settings) -> bool:
    if not deployment.container_id or not containers.is_running(client, deployment.container_id):
        return False
    host = settings.deploy_health_host or settings.deploy_bind_address
    url = f"http://{host}:{deployment.host_port}{deployment.health_path}"
    try:
        return 200 <= requests.get(url, timeout=2, allow_redirects=False).status_code < 300
    except requests.RequestException:
        return False


def check_deployments(client: docker.DockerClient, settings: Settings) -> dict[str, Any]:
    """Probe live deployments, retire replaced ones, settle and reconcile (bounded).

    Each part handles at most SWEEP_BATCH_SIZE rows or containers a run (the module's
    docstring says why); what is left waits for the next run.
    """
    limit = settings.sweep_batch_size
    _restore_firewall(settings)
    counts: dict[str, Any] = _check_live(client, settings, limit)
    counts["stops_finished"] = _finish_stuck_stops(client, limit)
    counts["settled"] = _settle_ended_jobs(client, limit)
    counts["reaped"] = reap_deploy_containers(client, limit)
    counts["released"] = release_orphan_leases(limit)
    counts["images_released"] = release_stopped_images(client, settings, limit)
    counts["checkouts_removed"] = git.remove_stale_checkouts(settings, limit)
    counts["envs_deleted"] = delete_stopped_envs(settings, limit)
    counts["networks_removed"] = networks.remove_unused(client, limit)
    counts["live_logs_deleted"] = live_log.delete_expired(settings, limit)
    return counts


def _restore_firewall(settings: Settings) -> None:
    """Deploys apply the host firewall as they start; this restores rules an operator's
    `iptables -F` or a firewall reload dropped while nobody deployed."""
    try:
        firewall.ensure(settings)
    except RetryableJobError:
        log.warning("deploy firewall missing", exc_info=True, extra={"event": "firewall_missing"})


def _check_live(client: docker.DockerClient, settings: Settings, limit: int) -> dict[str, int]:
    """The live deployments checked longest ago: those past their retire time are stopped,
    the others probed. Returns the counts checked, unhealthy and retired."""
    counts = {"checked": 0, "unhealthy": 0, "retired": 0}
    with session_scope() as session:
        live = list(
            session.scalars(
                select(Deployment)
                .where(Deployment.status.in_(LIVE))
                .order_by(Deployment.checked_at.asc().nulls_first())
                .limit(limit)
            )
        )
        session.expunge_all()
    for deployment in live:
        if deployment.retire_at is not None and deployment.retire_at <= now():
            counts["retired"] += _finish_stop(deployment.id, client)
            continue
        healthy = _record_health(deployment, client, settings)
        counts["checked"] += 1
        counts["unhealthy"] += 0 if healthy else 1
    return counts


def _record_health(deployment: Deployment, client: docker.DockerClient, settings: Settings) -> bool:
    """Probe one live deployment and record its status, check time and the tail of its log
    (the last tail is kept when the container has none to give)."""
    healthy = _probe(deployment, client, settings)
    tail = containers.logs_tail(client, deployment.container_id or "", 200)
    effects = transitions.Effects()
    with session_scope() as session:
        # Locked: a change of health is a webhook event, recorded with the change.
        current = session.get(Deployment, deployment.id, with_for_update=True)
        if current is not None:
            effects = transitions.record_health(session, current, healthy, tail)
    effects.apply()
    return healthy


def _finish_stuck_stops(client: docker.DockerClient, limit: int) -> int:
    """Stops still `stopping` after a minute (their task lost or failing) are finished
    here; returns how many were."""
    with session_scope() as session:
        stuck = list(
            session.scalars(
                select(Deployment.id)
                .where(
                    Deployment.status == DeploymentStatus.STOPPING,
                    Deployment.updated_at < now() - timedelta(seconds=60),
                )
                .limit(limit)
            )
        )
    return sum(_finish_stop(deployment_id, client) for deployment_id in stuck)


def _settle_ended_jobs(client: docker.DockerClient, limit: int) -> int:
    """Deployments still `starting` whose job already ended (its worker died before
    settling them) are settled here; returns how many were."""
    with session_scope() as session:
        ended = list(
            session.scalars(
                select(Deployment.job_id)
                .join(Job, Job.id == Deployment.job_id)
                .where(
                    Deployment.status == DeploymentStatus.STARTING,
                    Job.status.in_(
                        [JobStatus.FAILED.value, JobStatus.DEAD.value, JobStatus.CANCELLED.value]
                    ),
                )
                .limit(limit)
            )
        )
    for job_id in ended:
        settle_after_job(job_id, client)
    return len(ended)


def _finish_stop(deployment_id: uuid.UUID, client: docker.DockerClient) -> bool:
    """Finish a stop whose task was lost or failed. The deployment stays `stopping` until
    its container is gone: if the engine fails, the transaction of `stop_deployment` rolls
    back and the next check tries again (a stop, once accepted, is never undone)."""
    try:
        return stop_deployment(deployment_id, client) == DeploymentStatus.STOPPED
    except RetryableJobError:
        log.warning(
            "stop not finished; retried at the next check",
            exc_info=True,
            extra={"event": "stop_retry", "deployment_id": str(deployment_id)},
        )
        return False


def reap_deploy_containers(client: docker.DockerClient, limit: int) -> int:
    """Remove deployment containers whose deployment is not active (a crash mid-deploy,
    a failed removal) or unknown."""
    found = client.containers.list(all=True, filters={"label": f"{containers.LABEL_MANAGED}=true"})
    found = found[:limit]
    ids = {c.labels.get(containers.LABEL_DEPLOYMENT) for c in found}
    valid: set[str] = set()
    parsed = []
    for value in ids:
        try:
            parsed.append(uuid.UUID(value or ""))
        except ValueError:
            continue
    if parsed:
        with session_scope() as session:
            valid = {
                str(row)
                for row in session.scalars(
                    select(Deployment.id).where(
                        Deployment.id.in_(parsed),
                        # starting: only the container its job is building right now
                        Deployment.status.in_(ACTIVE),
                    )
                )
            }
    removed = 0
    for container in found:
        if container.labels.get(containers.LABEL_DEPLOYMENT) not in valid:
            containers.remove(client, container.id)
            removed += 1
    return removed


def release_stopped_images(client: docker.DockerClient, settings: Settings, limit: int) -> int:
    """Drop the image tags of deployments stopped longer than DEPLOY_IMAGE_RETENTION.

    A stopped deployment keeps its image so that a redeploy or rollback of its commit is a
    cached build; past the retention that is unlikely, and every deploy publishes a new tag
    that would otherwise stay on the deploy hosts' disks forever. A tag is removed only when
    no other deployment holds it: an active one, or one stopped within the retention. Oldest
    stop first and at most `limit` deployments per run, like every part of the check; the
    returned count is the deployments released (their tags removed or still held by others).
    """
    cutoff = now() - timedelta(seconds=settings.deploy_image_retention)
    holds_image = Deployment.image.is_not(None) & Deployment.image_released_at.is_(None)
    kept = kept_release(settings)
    # A deleted app's releases (app_id emptied) go at once: nothing can roll back to them.
    of_deleted_app = Deployment.app_id.is_(None) & Deployment.release.is_not(None)
    with session_scope() as session:
        rows = session.execute(
            select(Deployment.id, Deployment.image)
            .where(
                Deployment.status == DeploymentStatus.STOPPED,
                holds_image,
                or_(Deployment.stopped_at < cutoff, of_deleted_app),
                ~kept,
            )
            .order_by(Deployment.stopped_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return 0
        ids = [row.id for row in rows]
        tags = {row.image for row in rows}
        held = set(
            session.scalars(
                select(Deployment.image).where(
                    Deployment.image.in_(tags),
                    Deployment.id.not_in(ids),
                    or_(
                        Deployment.status.in_(ACTIVE),
                        holds_image
                        & (Deployment.status == DeploymentStatus.STOPPED)
                        & ((Deployment.stopped_at >= cutoff) | kept),
                    ),
                )
            )
        )
        # Removed before the rows are marked (and under their locks): if the engine cannot
        # be reached, the transaction rolls back and the next run tries again.
        for tag in sorted(tags - held):
            containers.remove_image(client, tag)
            log.info(
                "deployment image removed after its retention",
                extra={"event": "deployment_image_removed", "image": tag},
            )
        session.execute(
            update(Deployment).where(Deployment.id.in_(ids)).values(image_released_at=now())
        )
    return len(ids)


def delete_stopped_envs(settings: Settings, limit: int) -> int:
    """Empty the `env` (encrypted values) of deployments stopped longer than
    DEPLOY_IMAGE_RETENTION: nothing reads it again (a redeploy brings its own env), and a
    secret not kept cannot leak. The names stay in `env_names`. Oldest stop first, at most
    `limit` rows a run (the partial index ix_deployments_env_held finds them)."""
    cutoff = now() - timedelta(seconds=settings.deploy_image_retention)
    with session_scope() as session:
        ids = list(
            session.scalars(
                select(Deployment.id)
                .where(
                    Deployment.status == DeploymentStatus.STOPPED,
                    Deployment.env.is_not(None),
                    Deployment.stopped_at < cutoff,
                )
                .order_by(Deployment.stopped_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if ids:
            session.execute(update(Deployment).where(Deployment.id.in_(ids)).values(env=None))
    if ids:
        log.info(
            "deploy env values deleted after the retention",
            extra={"event": "deployment_env_deleted", "count": len(ids)},
        )
    return len(ids)


def release_orphan_leases(limit: int) -> int:
    with session_scope() as session:
        ports = list(
            session.scalars(
                select(PortLease.port)
                .join(Deployment, Deployment.id == PortLease.deployment_id)
                .where(Deployment.status.not_in(HOLDS_PORT))
                .limit(limit)
            )
        )
        if ports:
            session.execute(delete(PortLease).where(PortLease.port.in_(ports)))
    return len(ports)


__all__ = ["release_port"]
