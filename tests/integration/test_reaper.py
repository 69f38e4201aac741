"""The reaper removes containers whose job attempt is over, and only those."""

from __future__ import annotations

import uuid

import docker
import pytest
from docker.errors import NotFound
from sqlalchemy import update

from shared.db import session_scope
from shared.models import Job
from tests.helpers import User
from workers.reaper import reap_containers
from workers.sandbox import LABEL_ATTEMPT, LABEL_JOB, LABEL_MANAGED, Limits, container_options


@pytest.fixture()
def client() -> docker.DockerClient:
    return docker.from_env()


def sleeper(client, image: str, job_id: str, attempt: str):
    options = container_options(Limits(), {LABEL_JOB: job_id, LABEL_ATTEMPT: attempt})
    return client.containers.create(
        image, ["import time; time.sleep(120)"], entrypoint=["python3", "-c"], **options
    )


def exists(client, container) -> bool:
    try:
        client.containers.get(container.id)
    except NotFound:
        return False
    return True


def test_reaps_unknown_finished_and_superseded_but_keeps_the_running_attempt(
    client, settings, app
) -> None:
    user = User(app.test_client())
    job = user.submit("debug.sleep", {"seconds": 60, "steps": 120, "fleet": "deploy"})
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.id == uuid.UUID(job["id"])).values(status="running", attempts=2)
        )
    image = settings.processor_image
    current = sleeper(client, image, job["id"], "2")
    superseded = sleeper(client, image, job["id"], "1")
    unknown = sleeper(client, image, str(uuid.uuid4()), "1")
    garbage = sleeper(client, image, "not-a-job", "1")
    current.start()
    try:
        with session_scope() as session:
            removed = reap_containers(client, session)
        assert removed >= 3
        assert exists(client, current)
        for container in (superseded, unknown, garbage):
            assert not exists(client, container)
        with session_scope() as session:
            session.execute(
                update(Job).where(Job.id == uuid.UUID(job["id"])).values(status="cancelled")
            )
        with session_scope() as session:
            reap_containers(client, session)
        assert not exists(client, current)
    finally:
        for container in client.containers.list(
            all=True, filters={"label": f"{LABEL_MANAGED}=true"}
        ):
            container.remove(force=True, v=True)


def test_the_scheduled_reaper_runs_on_the_files_fleet(client, settings, tmp_path) -> None:
    """The beat entry's task, sent the way beat sends it, is consumed by a worker of the
    `files` fleet (the one with the Docker engine) and removes an orphan container."""
    import celeryconfig
    from shared.celery_app import app as celery_app
    from shared.dispatch import queues
    from tests.helpers import wait_for
    from tests.integration.workers import celery_worker

    entry = celeryconfig.beat_schedule["dockyard-reap-containers"]
    assert entry["task"] == queues.TASK_REAP_CONTAINERS
    assert entry["options"]["queue"] == queues.FILES
    orphan = sleeper(client, settings.processor_image, str(uuid.uuid4()), "1")
    orphan.start()
    try:
        with celery_worker(tmp_path, "files-reaper", queues.FILES):
            celery_app.send_task(entry["task"], **entry["options"])
            wait_for(lambda: not exists(client, orphan), message="the orphan to be reaped")
    finally:
        if exists(client, orphan):
            orphan.remove(force=True, v=True)
