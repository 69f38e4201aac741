"""The Docker engine restarted with a file job's container running and another file job
queued: the engine's shutdown stops the container, the attempt is retried once the engine is
back, and every job ends `succeeded` exactly once. The suite runs its modules one after
another, so nothing else uses the engine while it restarts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import docker
import pytest

from tests.helpers import User, wait_for
from tests.integration.workers import celery_worker
from workers.sandbox import LABEL_JOB

ROOT = Path(__file__).resolve().parents[2]


def _engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def restart_dockerd() -> None:
    """Stop the daemon the way an operator or a package upgrade does (SIGTERM: it stops its
    containers), then start it as scripts/images.sh does."""
    pid = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    assert pid, "dockerd is not running"
    subprocess.run(["kill", "-TERM", *pid], check=True)
    wait_for(lambda: not _engine_answers(), timeout=60, message="dockerd to stop")
    wait_for(
        lambda: subprocess.run(["pidof", "dockerd"], capture_output=True).returncode != 0,
        timeout=60,
        message="the old dockerd to exit",
    )
    log = (ROOT / "var" / "log" / "dockerd.log").open("ab")
    subprocess.Popen(
        ["dockerd"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(_engine_answers, timeout=60, message="dockerd to start again")


@pytest.fixture()
def user(app, tmp_path) -> User:
    with celery_worker(tmp_path, "files-restart", "files", 1):
        yield User(app.test_client())


def test_a_container_stopped_from_outside_is_retried(user) -> None:
    engine = docker.from_env()
    job = user.submit_file(
        "archive.compress", os.urandom(24 * 1024 * 1024), {"format": "xz", "level": 6}
    )
    (container,) = wait_for(
        lambda: engine.containers.list(filters={"label": f"{LABEL_JOB}={job['id']}"}),
        timeout=60,
        message="the processor container to run",
    )
    container.stop(timeout=0)  # SIGTERM, as `docker stop` or an engine shutdown sends
    done = user.wait_status(job["id"], "succeeded", "failed", "dead", timeout=120)
    assert done["status"] == "succeeded", done
    failed = [e for e in user.events(job["id"]) if e["type"] == "attempt_failed"]
    assert [e["data"]["error"]["code"] for e in failed] == ["container_stopped"]
    assert done["attempts"] == 2


def test_jobs_in_flight_survive_a_docker_engine_restart(user) -> None:
    engine = docker.from_env()
    # xz on incompressible data: long enough to be mid-run when the engine stops.
    running = user.submit_file(
        "archive.compress", os.urandom(24 * 1024 * 1024), {"format": "xz", "level": 6}
    )
    queued = user.submit_file("file.checksum", b"queued behind the restart\n")
    wait_for(
        lambda: engine.containers.list(filters={"label": f"{LABEL_JOB}={running['id']}"}),
        timeout=60,
        message="the processor container to run",
    )
    restart_dockerd()
    for job in (running, queued):
        done = user.wait_status(job["id"], "succeeded", "failed", "dead", timeout=180)
        assert done["status"] == "succeeded", done
    events = [event["type"] for event in user.events(running["id"])]
    assert events.count("succeeded") == 1 and events[-1] == "succeeded", events
    assert "attempt_failed" in events, events  # the engine's stop really hit the attempt
    assert [event["type"] for event in user.events(queued["id"])].count("started") == 1
