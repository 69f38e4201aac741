"""Routing, on pytest-celery's broker and workers: every task goes to its fleet's queue, and
nothing to Celery's default `celery` queue."""

from __future__ import annotations

import pytest
from celery import Celery
from flask.testing import FlaskClient
from pytest_celery import CeleryTestBroker, CeleryTestSetup

from tests.helpers import User, wait_for
from tests.integration.celery.broker import waiting_messages
from tests.integration.celery.conftest import DockyardWorkerContainer, worker_class

#: Written out, not read from celeryconfig: the test states where each routed task must go.
ROUTED_TASKS = {
    "dockyard.dead_letter.record": "dead_letter",
    "dockyard.maintenance.sweep": "maintenance",
    "dockyard.maintenance.file_sweep": "maintenance",
    "dockyard.maintenance.release_due": "maintenance",
    "dockyard.maintenance.schedule_tick": "maintenance",
    "dockyard.webhooks.deliver": "webhooks",
    "dockyard.webhooks.dispatch": "webhooks",
    "dockyard.files.reap_containers": "files",
    "dockyard.deploy.stop": "deploy",
    "dockyard.deploy.check": "deploy",
}

FLEETS = ("diagnostics", "files", "deploy")


def test_each_routed_task_waits_in_its_fleets_queue_only(
    celery_broker: CeleryTestBroker, publisher: Celery
) -> None:
    sent = {publisher.send_task(task).id: task for task in ROUTED_TASKS}
    waiting = waiting_messages(celery_broker.container.client)
    assert sorted((m.task, m.queue) for m in waiting) == sorted(ROUTED_TASKS.items())
    assert {m.task_id for m in waiting} == set(sent)  # each message once, in one list


@pytest.mark.parametrize(
    "default_worker_container_cls",
    [worker_class(f"{fleet}-only", fleet) for fleet in FLEETS],
    ids=FLEETS,
)
def test_a_job_runs_on_its_own_fleet_and_waits_for_no_other(
    default_worker_container_cls: type[DockyardWorkerContainer],
    celery_setup: CeleryTestSetup,
    api: FlaskClient,
) -> None:
    worker = celery_setup.worker
    fleet = default_worker_container_cls.worker_queue()
    assert worker.worker_queue == fleet
    other = next(f for f in FLEETS if f != fleet)
    user = User(api)
    elsewhere = user.submit("debug.echo", {"message": "not mine", "fleet": other})
    mine = user.submit("debug.echo", {"message": "mine", "fleet": fleet})

    done = user.wait_status(mine["id"], "succeeded", timeout=60)
    assert done["queue"] == fleet
    assert done["result"] == {"message": "mine"}
    started = [e["data"]["worker"] for e in user.events(mine["id"]) if e["type"] == "started"]
    assert started == [worker.hostname()]

    # The other fleet's job waits, in its own queue, for a worker of that fleet.
    waiting = wait_for(
        lambda: [
            m
            for m in waiting_messages(celery_setup.broker.container.client)
            if m.kwargs.get("job_id") == elsewhere["id"]
        ],
        message="the other fleet's job message",
    )
    assert [m.queue for m in waiting] == [other]
    assert user.job(elsewhere["id"])["status"] == "queued"
