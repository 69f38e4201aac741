"""Nothing accepted is lost: real worker processes, real SIGKILLs, real broker and database.

The crash workers consume only the `files` queue (diagnostics sent there with `fleet`), so
these tests also prove that retries and re-dispatches go back to the job's own queue rather
than Celery's default queue.
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest
from sqlalchemy import select

from shared.db import session_scope
from shared.dispatch.publish import Dispatch, send
from shared.dispatch.queues import TASK_DIAGNOSTIC
from shared.models import Job
from tests.helpers import User, wait_for
from tests.integration.workers import celery_beat, celery_worker

pytestmark = pytest.mark.usefixtures("job_worker")


def job_row(job_id: str) -> Job:
    with session_scope() as session:
        job = session.scalar(select(Job).where(Job.id == uuid.UUID(job_id)))
        assert job is not None
        session.expunge(job)
        return job


def started_workers(user: User, job_id: str) -> list[str]:
    return [e["data"]["worker"] for e in user.events(job_id) if e["type"] == "started"]


def test_retry_goes_back_to_its_own_queue(client, tmp_path) -> None:
    user = User(client)
    with celery_worker(tmp_path, "files-only", "files") as worker:
        job = user.submit(
            "debug.fail",
            {"fail_times": 2, "fleet": "files"},
            headers={"X-Request-ID": "trace-retry-routing"},
        )
        done = user.wait_status(job["id"], "succeeded", timeout=60)

        # The API's request id follows the job into the worker's log lines (the last one is
        # written just after the commit the test saw).
        def ended_lines() -> list[str]:
            return [
                line
                for line in worker.log().splitlines()
                if job["id"] in line and "job attempt ended" in line
            ]

        ended = wait_for(lambda: len(ended_lines()) >= 3 and ended_lines(), message="3 attempts")
        assert len(ended) == 3
        assert all("request_id=trace-retry-routing" in line for line in ended)
    assert done["attempts"] == 3
    assert done["queue"] == "files"
    assert started_workers(user, job["id"]) == ["files-only@localhost"] * 3


def test_pool_process_killed_mid_job_is_redelivered_and_succeeds(client, tmp_path) -> None:
    user = User(client)
    with celery_worker(tmp_path, "crashy", "files") as worker:
        job = user.submit("debug.sleep", {"seconds": 3, "steps": 6, "fleet": "files"})
        wait_for(
            lambda: user.job(job["id"])["progress"]["current"],
            timeout=30,
            message="the job to make progress",
        )
        pool_pid = job_row(job["id"]).worker_pid
        assert pool_pid and pool_pid != worker.popen.pid
        os.kill(pool_pid, signal.SIGKILL)
        done = user.wait_status(job["id"], "succeeded", timeout=60)
    assert done["attempts"] == 2
    kinds = [e["type"] for e in user.events(job["id"])]
    assert kinds.count("started") == 2
    assert kinds.index("worker_lost") < len(kinds) - kinds[::-1].index("started")
    assert job_row(job["id"]).worker_pid != pool_pid


def test_whole_worker_killed_job_reruns_on_another_worker_within_60s(client, tmp_path) -> None:
    user = User(client)
    with celery_beat(tmp_path):
        with celery_worker(tmp_path, "doomed", "files") as doomed:
            job = user.submit("debug.sleep", {"seconds": 4, "steps": 8, "fleet": "files"})
            wait_for(
                lambda: user.job(job["id"])["progress"]["current"],
                timeout=30,
                message="the job to make progress",
            )
            first_dispatch = job_row(job["id"]).dispatch_id
            doomed.kill_group(signal.SIGKILL)  # main process and pool, at once
        with celery_worker(tmp_path, "rescuer", "files") as rescuer:
            done = user.wait_status(job["id"], "succeeded", timeout=60)
            assert started_workers(user, job["id"]) == ["doomed@localhost", "rescuer@localhost"]
            kinds = [e["type"] for e in user.events(job["id"])]
            assert "worker_lost" in kinds
            assert done["attempts"] == 2

            # The broker may still hand out the dead worker's message (after its visibility
            # timeout). That superseded delivery must be recognised and dropped.
            assert first_dispatch is not None
            send(Dispatch(uuid.UUID(job["id"]), first_dispatch, "files", TASK_DIAGNOSTIC))
            wait_for(
                lambda: "superseded by a newer delivery" in rescuer.log(),
                timeout=30,
                message="the stale delivery to be dropped",
            )
    after = user.job(job["id"])
    assert after["status"] == "succeeded" and after["attempts"] == 2
    assert started_workers(user, job["id"]) == ["doomed@localhost", "rescuer@localhost"]
