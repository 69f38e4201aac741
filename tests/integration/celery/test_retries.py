"""Retries with exponential backoff, on pytest-celery's broker and a worker of the `files`
fleet only: every retry goes back to the job's own queue (Celery has sent retries to its
default `celery` queue instead: celery#8357, celery#3622), after the backoff it announced."""

from __future__ import annotations

from datetime import datetime

from flask.testing import FlaskClient
from pytest_celery import CeleryTestSetup

from shared.config import Settings
from tests.helpers import User, wait_for
from tests.integration.celery.jobs import event_types, started_workers


def test_retries_back_off_exponentially_in_the_jobs_own_queue(
    celery_setup: CeleryTestSetup, api: FlaskClient, settings: Settings
) -> None:
    worker = celery_setup.worker
    assert worker.worker_queue == "files"
    user = User(api)
    job = user.submit(
        "debug.fail",
        {"fail_times": 2, "fleet": "files"},
        headers={"X-Request-ID": "trace-retry-routing"},
    )
    done = user.wait_status(job["id"], "succeeded", timeout=60)
    assert done["attempts"] == 3
    assert done["queue"] == "files"
    assert done["result"] == {"succeeded_on_attempt": 3}
    # Only a `files` worker runs: each attempt reached it through the `files` queue.
    assert started_workers(user, job["id"]) == [worker.hostname()] * 3
    assert not celery_setup.broker.container.client.exists("celery")

    events = user.events(job["id"])
    assert event_types(user, job["id"]) == [
        "submitted",
        "started",
        "attempt_failed",
        "retry_scheduled",
        "started",
        "attempt_failed",
        "retry_scheduled",
        "started",
        "succeeded",
    ]
    retries = [e for e in events if e["type"] == "retry_scheduled"]
    for attempt, event in enumerate(retries, start=1):
        ceiling = settings.retry_backoff_base * 2 ** (attempt - 1)
        assert ceiling * (1 - settings.retry_jitter) <= event["data"]["delay"] <= ceiling
        assert event["data"]["queue"] == "files"
    # Each retry started no earlier than its announced delay after it was scheduled.
    starts = [e for e in events if e["type"] == "started"][1:]
    for retry, start in zip(retries, starts, strict=True):
        waited = datetime.fromisoformat(start["created_at"]) - datetime.fromisoformat(
            retry["created_at"]
        )
        assert waited.total_seconds() >= retry["data"]["delay"] - 0.05

    # The API's request id follows the job into each attempt's log line in the worker.
    def ended_lines() -> list[str]:
        return [
            line
            for line in worker.logs().splitlines()
            if job["id"] in line and "job attempt ended" in line
        ]

    wait_for(lambda: len(ended_lines()) >= 3, message="3 attempts")
    ended = ended_lines()
    assert len(ended) == 3
    assert all("request_id=trace-retry-routing" in line for line in ended)
