"""Removes processor containers that outlived their job attempt (a worker crashed while one
ran, or its removal failed).

A container is kept only while its job is running the very attempt on its label. Each run
looks at most `limit` containers: after an outage there may be many, and one short pass
every few minutes clears them without holding the Docker API or the database for long.
"""

from __future__ import annotations

import logging
import uuid

import docker
from docker.errors import DockerException
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.jobs.status import JobStatus
from shared.models import Job
from workers.sandbox import LABEL_ATTEMPT, LABEL_JOB, LABEL_MANAGED

log = logging.getLogger(__name__)


def _job_id(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value or "")
    except ValueError:
        return None


def reap_containers(client: docker.DockerClient, session: Session, limit: int = 200) -> int:
    """Remove managed containers whose job is unknown, finished, or on another attempt."""
    containers = client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=true"})
    containers = containers[:limit]
    ids = {job_id for c in containers if (job_id := _job_id(c.labels.get(LABEL_JOB)))}
    running = (
        {
            (str(job.id), str(job.attempts))
            for job in session.scalars(
                select(Job).where(Job.id.in_(ids), Job.status == JobStatus.RUNNING.value)
            )
        }
        if ids
        else set()
    )
    removed = 0
    for container in containers:
        key = (container.labels.get(LABEL_JOB), container.labels.get(LABEL_ATTEMPT))
        if key in running:
            continue
        try:
            container.remove(v=True, force=True)
            removed += 1
            log.info(
                "orphan container removed",
                extra={
                    "event": "container_reaped",
                    "container": container.short_id,
                    "job_id": key[0],
                },
            )
        except DockerException:
            log.warning(
                "could not remove container",
                exc_info=True,
                extra={"event": "container_reap_failed"},
            )
    return removed
