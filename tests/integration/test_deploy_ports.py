"""A host port the worker's own check saw as free but the engine cannot bind (in compose the
deploy worker checks from inside its container; with a remote engine, from another host) is
swapped for another port, instead of failing every attempt on the same one. Real engine."""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid

import docker
import pytest
from sqlalchemy import delete, select

from shared.config import Settings
from shared.db import session_scope
from shared.models import Deployment, PortLease
from tests.helpers import User
from workers.deploy.containers import remove, remove_for_deployment, remove_image
from workers.deploy.pipeline import start_on_leased_port
from workers.deploy.ports import release_port

BASE_IMAGE = os.environ.get("DOCKYARD_BASE_IMAGE", "dockyard/base:bookworm")
RANGE = (20950, 20959)  # inside no other test's range


@pytest.fixture()
def sleeper(tmp_path):
    tag = f"dockyard-deploy/dockyard-tests-ports:{uuid.uuid4().hex[:12]}"
    (tmp_path / "Dockerfile").write_text(f'FROM {BASE_IMAGE}\nCMD ["sleep", "300"]\n')
    client = docker.from_env()
    client.images.build(path=str(tmp_path), tag=tag, rm=True)
    yield tag
    remove_image(client, tag)


def test_a_port_the_engine_refuses_is_swapped_for_another(app, settings: Settings, sleeper) -> None:
    user = User(app.test_client())
    with session_scope() as session:
        row = Deployment(
            owner_id=uuid.UUID(user.profile["id"]),
            job_id=uuid.uuid4(),
            repo_url="https://github.com/dockyard-tests/ports",
            repo_key="dockyard-tests/ports",
            status="starting",
        )
        session.add(row)
        session.flush()
        session.add(PortLease(port=RANGE[0], deployment_id=row.id))
        session.expunge(row)
    held = socket.socket()
    held.bind(("127.0.0.1", RANGE[0]))  # taken by "something outside the platform"
    held.listen()
    client = docker.from_env()
    container = None
    try:
        container, port = start_on_leased_port(
            client, sleeper, row, str(row.job_id), 8080, RANGE[0],
            dataclasses.replace(settings, deploy_port_range=RANGE),
        )  # fmt: skip
        assert port != RANGE[0] and RANGE[0] < port <= RANGE[1]
        container.reload()
        assert container.status == "running"
        bound = container.attrs["HostConfig"]["PortBindings"]["8080/tcp"][0]
        assert bound["HostPort"] == str(port)
        with session_scope() as session:
            leases = session.scalars(
                select(PortLease.port).where(PortLease.deployment_id == row.id)
            ).all()
        assert leases == [port]  # the refused port went back to the pool
        # Only the started container is left: the one the engine could not start is gone.
        labelled = client.containers.list(
            all=True, filters={"label": f"dockyard.deployment={row.id}"}
        )
        assert [c.id for c in labelled] == [container.id]
    finally:
        held.close()
        if container is not None:
            remove(client, container.id)
        remove_for_deployment(client, str(row.id))
        release_port(row.id)
        with session_scope() as session:
            session.execute(delete(Deployment).where(Deployment.id == row.id))
