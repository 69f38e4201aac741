"""Dead-letter routing, on pytest-celery's broker and workers: work that exhausted its retries
waits in the `dead_letter` queue (nowhere else) until that queue's own worker records it."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from pytest_celery import CeleryTestSetup

from tests.helpers import User, wait_for
from tests.integration.celery.broker import Waiting, waiting_messages
from tests.integration.celery.conftest import DockyardWorkerContainer, worker_class
from tests.integration.celery.jobs import dead_letters, event_types


@pytest.fixture
def second_worker_cls() -> type[DockyardWorkerContainer]:
    return worker_class("dead-letters", "dead_letter")


def test_exhausted_job_waits_in_the_dead_letter_queue_until_its_worker_records_it(
    celery_setup: CeleryTestSetup, api: FlaskClient, request: pytest.FixtureRequest
) -> None:
    broker = celery_setup.broker.container.client
    user = User(api)
    job = user.submit("debug.fail", {"fail_times": 5, "fleet": "files"}, max_attempts=2)
    done = user.wait_status(job["id"], "dead", timeout=60)
    assert done["attempts"] == 2
    assert event_types(user, job["id"])[-1] == "dead_lettered"

    def letters() -> list[Waiting]:
        return [
            m
            for m in waiting_messages(broker)
            if m.task == "dockyard.dead_letter.record"
            and m.kwargs["payload"]["job_id"] == job["id"]
        ]

    waiting = wait_for(letters, message="the dead letter in the broker")
    assert [m.queue for m in waiting] == ["dead_letter"]
    payload = waiting[0].kwargs["payload"]
    assert payload["attempts"] == 2
    assert payload["args"]["queue"] == "files"
    assert payload["error_code"] == "debug_transient_failure"
    assert dead_letters(job["id"]) == []  # no `dead_letter` worker yet: nothing recorded

    recorder = request.getfixturevalue("second_worker")
    assert recorder.worker_queue == "dead_letter"
    recorded = wait_for(lambda: dead_letters(job["id"]), message="the dead letter recorded")
    assert len(recorded) == 1
    assert recorded[0].attempts == 2
    assert recorded[0].task_name == "dockyard.diagnostic.run"
    assert recorded[0].error_code == "debug_transient_failure"
    assert "RetryableJobError" in (recorded[0].traceback or "")
    assert recorded[0].args["params"]["fail_times"] == 5
    assert letters() == []
