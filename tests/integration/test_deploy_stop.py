"""A stop, once accepted, ends `stopped` or is retried: the periodic check finishes a stuck
`stopping` deployment, and an engine that fails on the way leaves it `stopping` for the next
check (it used to be set back to `healthy` first, and the user's stop was lost). Real Docker
engine (a container stands for the app), real PostgreSQL; the engine's failure is a real one:
a client whose socket leads nowhere."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import docker
import pytest
import requests
from docker.errors import NotFound

from shared.clock import now
from shared.config import Settings
from shared.db import session_scope
from shared.errors import RetryableJobError
from shared.models import Deployment, PortLease
from tests.helpers import User
from workers.deploy import containers
from workers.deploy.lifecycle import _finish_stop, check_deployments, stop_deployment

BASE_IMAGE = "dockyard/base:bookworm"
PORT = 21430  # a lease only: nothing binds it


@pytest.fixture()
def app_container() -> Iterator[tuple[uuid.UUID, str]]:
    """A running container labelled as a deployment's (what the check may remove)."""
    deployment_id = uuid.uuid4()
    container = docker.from_env().containers.run(
        BASE_IMAGE,
        ["sleep", "600"],
        detach=True,
        labels={
            containers.LABEL_MANAGED: "true",
            containers.LABEL_DEPLOYMENT: str(deployment_id),
        },
    )
    yield deployment_id, container.id
    containers.remove(docker.from_env(), container.id)


def stuck_stopping(owner: str, deployment_id: uuid.UUID, container_id: str) -> None:
    """A deployment whose stop was accepted a while ago and whose stop task never ran."""
    with session_scope() as session:
        session.add(
            Deployment(
                id=deployment_id,
                owner_id=uuid.UUID(owner),
                job_id=uuid.uuid4(),
                repo_url="https://github.com/dockyard-tests/stop",
                repo_key="dockyard-tests/stop",
                status="stopping",
                container_id=container_id,
                host_port=PORT,
                updated_at=now() - timedelta(minutes=5),
            )
        )
        session.flush()
        session.add(PortLease(port=PORT, deployment_id=deployment_id))


def status_of(deployment_id: uuid.UUID) -> str:
    with session_scope() as session:
        return session.get(Deployment, deployment_id).status


def running(container_id: str) -> bool:
    try:
        return docker.from_env().containers.get(container_id).status == "running"
    except NotFound:
        return False


def test_a_stop_survives_an_engine_failure_and_ends_stopped(
    app, settings: Settings, app_container
) -> None:
    deployment_id, container_id = app_container
    owner = User(app.test_client()).profile["id"]
    stuck_stopping(owner, deployment_id, container_id)

    unreachable = docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    with pytest.raises(requests.ConnectionError):
        unreachable.containers.get(container_id)  # the engine really fails for this client
    # The stop task's call: a retryable error (the task retries it), nothing changed.
    with pytest.raises(RetryableJobError):
        stop_deployment(deployment_id, unreachable)
    assert status_of(deployment_id) == "stopping"
    # The check's call: logged, left for the next check.
    assert _finish_stop(deployment_id, unreachable) is False
    # The stop is not undone: still `stopping` (not `healthy`), container and lease kept.
    assert status_of(deployment_id) == "stopping"
    assert running(container_id)

    counts = check_deployments(docker.from_env(), settings)  # the next check, engine back
    assert counts["stops_finished"] == 1
    assert status_of(deployment_id) == "stopped"
    assert not running(container_id)
    with session_scope() as session:
        assert session.get(PortLease, PORT) is None
