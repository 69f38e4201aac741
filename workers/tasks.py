"""Celery tasks. Each one only parses its arguments and calls plain functions.

Task names say what runs (dockyard.diagnostic.run, dockyard.file.run, ...) so Flower tells
the kinds of work apart at a glance.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from celery import Task
from celery.signals import after_setup_logger, task_postrun, task_prerun, worker_process_init
from docker.errors import DockerException
from sqlalchemy.exc import DBAPIError

from shared import logging_setup
from shared.celery_app import app
from shared.config import get_settings
from shared.db import reset_engine, session_scope, use_asynchronous_commit
from shared.dispatch import queues
from shared.errors import RetryableJobError
from workers import liveness, sandbox  # noqa: F401  (liveness: signal handlers)
from workers.dead_letters import record_dead_letter
from workers.deploy import lifecycle as deploy_lifecycle
from workers.deploy import routes as _routes  # noqa: F401  (the proxy sync thread)
from workers.file_sweeps import run_file_sweeps
from workers.reaper import reap_containers
from workers.release import release_tick
from workers.runner import Delivery, run_delivery
from workers.schedules import run_schedule_tick
from workers.sweeps import run_sweeps
from workers.webhooks import deliver, dispatch_due


@after_setup_logger.connect
def _configure_logging(logger: logging.Logger, **_: Any) -> None:
    # One handler, one format: replace Celery's own handler with the JSON-lines one.
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    settings = get_settings()
    logging_setup.configure_logging(
        settings.service_name or "worker", settings.log_level, settings.log_json
    )


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # A forked pool process must not reuse the parent's database connections.
    reset_engine()
    use_asynchronous_commit()


@task_prerun.connect
def _bind_log_context(task: Task[..., Any], kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    kwargs = kwargs or {}
    logging_setup.clear()
    logging_setup.bind(
        task=task.name,
        job_id=kwargs.get("job_id"),
        request_id=kwargs.get("request_id"),
        dispatch_id=kwargs.get("dispatch_id"),
    )


@task_postrun.connect
def _clear_log_context(**_: Any) -> None:
    logging_setup.clear()


# Job tasks keep no Celery result row (ignore_result): the job row is the result store, and
# Flower shows each task's outcome from its task events. The result backend stays configured
# for the other tasks (dead letters, deployment stops).
def _deliver(task: Task[..., dict[str, Any]], job_id: str, dispatch_id: str) -> dict[str, Any]:
    delivery = Delivery(
        job_id=uuid.UUID(job_id),
        dispatch_id=uuid.UUID(dispatch_id),
        task_name=task.name,
        hostname=task.request.hostname or "unknown",
    )
    try:
        return run_delivery(delivery, get_settings())
    except DBAPIError as error:
        # PostgreSQL unreachable or the connection died: deliver again later, to this same
        # queue (named explicitly: a bare retry can land in the default queue, celery#8357).
        # (A delivery without a routing key leaves the choice to Celery, as before.)
        queue = (task.request.delivery_info or {}).get("routing_key")
        if queue is None:
            raise task.retry(exc=error, countdown=5, max_retries=None) from error
        raise task.retry(exc=error, countdown=5, max_retries=None, queue=queue) from error


@app.task(name=queues.TASK_DIAGNOSTIC, bind=True, ignore_result=True)
def run_diagnostic(
    self: Task[..., dict[str, Any]], job_id: str, dispatch_id: str, request_id: str | None = None
) -> dict[str, Any]:
    """Run a debug.* processor in the worker process."""
    return _deliver(self, job_id, dispatch_id)


@app.task(name=queues.TASK_FILE, bind=True, ignore_result=True)
def run_file(
    self: Task[..., dict[str, Any]], job_id: str, dispatch_id: str, request_id: str | None = None
) -> dict[str, Any]:
    """Run a file processor in a locked-down container (the `files` fleet)."""
    return _deliver(self, job_id, dispatch_id)


@app.task(name=queues.TASK_DEAD_LETTER)
def record_dead_letter_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Consume the dead-letter queue: keep the failed work for operators to inspect."""
    with session_scope() as session:
        created = record_dead_letter(session, payload)
    return {"job_id": payload.get("job_id"), "recorded": created}


@app.task(name=queues.TASK_SWEEP, ignore_result=True)
def sweep() -> dict[str, Any]:
    """Outbox, stale-heartbeat and dead-letter sweeps (bounded per run)."""
    return run_sweeps(get_settings())


@app.task(name=queues.TASK_RELEASE_DUE, ignore_result=True)
def release_due_jobs() -> dict[str, Any]:
    """Release delayed jobs that are due, and those due before the next tick (bounded)."""
    return {"released": release_tick(get_settings().release_interval)}


@app.task(name=queues.TASK_SCHEDULE_TICK, ignore_result=True)
def schedule_tick() -> dict[str, Any]:
    """Make the jobs of due schedule occurrences (bounded per run)."""
    return run_schedule_tick(get_settings())


@app.task(name=queues.TASK_FILE_SWEEP, ignore_result=True)
def file_sweep() -> dict[str, Any]:
    """Delete inputs of ended jobs and results past their retention (bounded per run)."""
    return run_file_sweeps(get_settings())


@app.task(name=queues.TASK_REAP_CONTAINERS, ignore_result=True)
def reap_processor_containers() -> dict[str, Any]:
    """Remove processor containers left by crashed workers. Routed to the `files` fleet:
    its workers are the ones that reach the Docker engine running those containers."""
    try:
        client = sandbox.docker_client()
        with session_scope() as session:
            return {"removed": reap_containers(client, session)}
    except (RetryableJobError, DockerException):
        logging.getLogger(__name__).warning(
            "reaper skipped: Docker engine unreachable", extra={"event": "reaper_skipped"}
        )
        return {"removed": 0}


@app.task(name=queues.TASK_DEPLOY, bind=True, ignore_result=True)
def run_deploy(
    self: Task[..., dict[str, Any]], job_id: str, dispatch_id: str, request_id: str | None = None
) -> dict[str, Any]:
    """Clone, build, run and health-check a repository (the `deploy` fleet)."""
    return _deliver(self, job_id, dispatch_id)


@app.task(name=deploy_lifecycle.TASK_STOP, bind=True, max_retries=None)
def stop_deployment(self: Task[..., dict[str, Any]], deployment_id: str) -> dict[str, Any]:
    """Stop a deployment (user's stop, or the retirement of a replaced one)."""
    try:
        status = deploy_lifecycle.stop_deployment(uuid.UUID(deployment_id), sandbox.docker_client())
    except (RetryableJobError, DockerException, DBAPIError) as error:
        raise self.retry(exc=error, countdown=5, queue=queues.DEPLOY) from error
    return {"deployment_id": deployment_id, "status": status}


@app.task(name=deploy_lifecycle.TASK_CHECK, ignore_result=True)
def check_deployments() -> dict[str, Any]:
    """Health of live deployments, retirements, settling and reconciliation (bounded)."""
    try:
        client = sandbox.docker_client()
    except RetryableJobError:
        logging.getLogger(__name__).warning(
            "deployment check skipped: Docker engine unreachable", extra={"event": "check_skipped"}
        )
        return {}
    return deploy_lifecycle.check_deployments(client, get_settings())


@app.task(name=queues.TASK_WEBHOOK_DELIVER, ignore_result=True)
def deliver_webhook(delivery_id: str, lease: str | None = None) -> dict[str, Any]:
    """One attempt of one webhook delivery (the `webhooks` fleet); `lease` is the
    dispatcher's, when it sent this message."""
    taken = datetime.fromisoformat(lease) if lease else None
    return {"outcome": deliver(uuid.UUID(delivery_id), get_settings(), taken)}


@app.task(name=queues.TASK_WEBHOOK_DISPATCH, ignore_result=True)
def dispatch_webhooks() -> dict[str, Any]:
    """Send the deliver task for due pending deliveries (retries, lost messages; bounded)."""
    return {"dispatched": dispatch_due(app)}
