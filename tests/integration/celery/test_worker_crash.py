"""Nothing accepted is lost, on pytest-celery's workers: a pool process SIGKILLed mid-job, and
a whole worker container SIGKILLed mid-job; each job is recovered and succeeds once."""

from __future__ import annotations

import uuid

import pytest
from celery import Celery
from flask.testing import FlaskClient
from pytest_celery import CeleryTestSetup

from shared.dispatch.publish import Dispatch, send
from shared.dispatch.queues import TASK_DIAGNOSTIC
from tests.helpers import User, wait_for
from tests.integration.celery.conftest import DockyardWorkerContainer, worker_class
from tests.integration.celery.jobs import event_types, job_row, started_workers


@pytest.fixture
def second_worker_cls() -> type[DockyardWorkerContainer]:
    """The rescuer: the `files` fleet, plus maintenance and beat for the heartbeat sweep."""
    return worker_class("rescuer", "files,maintenance", concurrency=2, beat=True)


def wait_progress(user: User, job_id: str) -> None:
    wait_for(
        lambda: user.job(job_id)["progress"]["current"],
        timeout=30,
        message="the job to make progress",
    )


@pytest.mark.parametrize("default_worker_container_cls", [worker_class("crashy", "files")])
def test_pool_process_killed_mid_job_is_redelivered_and_succeeds(
    default_worker_container_cls: type[DockyardWorkerContainer],
    celery_setup: CeleryTestSetup,
    api: FlaskClient,
) -> None:
    user = User(api)
    job = user.submit("debug.sleep", {"seconds": 3, "steps": 6, "fleet": "files"})
    wait_progress(user, job["id"])
    pool_pid = job_row(job["id"]).worker_pid
    assert pool_pid and pool_pid != 1  # PID 1 is the worker's main process
    celery_setup.worker.kill_pid(pool_pid)

    done = user.wait_status(job["id"], "succeeded", timeout=60)
    assert done["attempts"] == 2
    kinds = event_types(user, job["id"])
    assert kinds.count("started") == 2
    assert kinds.count("succeeded") == 1
    assert kinds.index("worker_lost") < len(kinds) - kinds[::-1].index("started")
    assert job_row(job["id"]).worker_pid != pool_pid


@pytest.mark.parametrize("default_worker_container_cls", [worker_class("doomed", "files")])
def test_worker_container_killed_mid_job_is_recovered_and_succeeds_once(
    default_worker_container_cls: type[DockyardWorkerContainer],
    celery_setup: CeleryTestSetup,
    api: FlaskClient,
    publisher: Celery,
    request: pytest.FixtureRequest,
) -> None:
    doomed = celery_setup.worker
    user = User(api)
    job = user.submit("debug.sleep", {"seconds": 4, "steps": 8, "fleet": "files"})
    wait_progress(user, job["id"])
    first_dispatch = job_row(job["id"]).dispatch_id
    doomed.kill()  # SIGKILL to the container: main process and pool at once
    assert doomed.container.status == "exited"

    rescuer = request.getfixturevalue("second_worker")
    done = user.wait_status(job["id"], "succeeded", timeout=60)
    assert started_workers(user, job["id"]) == [doomed.hostname(), rescuer.hostname()]
    assert "worker_lost" in event_types(user, job["id"])
    assert done["attempts"] == 2

    # The broker may still hand out the dead worker's message (after its visibility timeout).
    # That superseded delivery must be recognised and dropped.
    assert first_dispatch is not None
    send(Dispatch(uuid.UUID(job["id"]), first_dispatch, "files", TASK_DIAGNOSTIC), publisher)
    rescuer.wait_for_log("superseded by a newer delivery", timeout=30)
    after = user.job(job["id"])
    assert after["status"] == "succeeded" and after["attempts"] == 2
    assert started_workers(user, job["id"]) == [doomed.hostname(), rescuer.hostname()]
    assert event_types(user, job["id"]).count("succeeded") == 1
