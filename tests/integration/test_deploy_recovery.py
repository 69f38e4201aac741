"""A deploy worker killed mid-deploy: its app container and port lease outlive it; once the
job has ended, the periodic check (the reaper of the deploy fleet) removes both. This module
runs without the deploy fleet of test_deploy_jobs, so the doomed worker gets the job."""

from __future__ import annotations

import os
import uuid

import docker
import pytest
from sqlalchemy import update

from shared.db import session_scope
from shared.models import Deployment
from tests.helpers import User, wait_for
from tests.integration.git_repos import FakeGitHub
from tests.integration.test_deploy_jobs import PORTS, deploy, deployment, labelled, leases
from tests.integration.workers import celery_worker
from workers.deploy.containers import LABEL_DEPLOYMENT, LABEL_JOB, LABEL_MANAGED
from workers.deploy.lifecycle import check_deployments, settle_after_job
from workers.sweeps import recover_stale_jobs

BASE_IMAGE = os.environ.get("DOCKYARD_BASE_IMAGE", "dockyard/base:bookworm")


def test_a_worker_killed_mid_deploy_leaks_nothing_once_the_reaper_runs(
    app, tmp_path, settings, job_worker
) -> None:
    """A second fleet member is killed (whole process group) while its app container runs
    the health check; the user cancels; the periodic check then cleans up."""
    user = User(app.test_client())
    github = FakeGitHub(tmp_path / "github")
    github.publish("unhealthy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GIT_CONFIG_GLOBAL", str(github.gitconfig))
        patch.setenv("DEPLOY_GIT_PROTOCOLS", "https,file")
        patch.setenv("DEPLOY_PORT_RANGE", f"{PORTS[0]}-{PORTS[1]}")
        patch.setenv("DEPLOY_HEALTH_TIMEOUT", "60")
        job = deploy(user, github.url("unhealthy"))
        record_id = job["params"]["deployment_id"]
        with celery_worker(tmp_path, "deploy-doomed", "deploy") as doomed:
            wait_for(
                lambda: labelled(record_id) and record_id in leases().values(),
                timeout=120,
                message="the app container to run",
            )
            doomed.kill_group()
    assert labelled(record_id) and record_id in leases().values()  # left behind by the crash
    assert user.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 202
    wait_for(  # the heartbeat sweep ends the job whose worker died
        lambda: recover_stale_jobs(settings) >= 0 and user.job(job["id"])["status"] == "cancelled",
        timeout=30,
        message="the stale job to be cancelled",
    )
    check_deployments(docker.from_env(), settings)
    settled = deployment(user, record_id)
    assert settled["status"] == "stopped"
    assert labelled(record_id) == []
    tags = {tag for image in docker.from_env().images.list() for tag in image.tags}
    assert settled["image"] and settled["image"] not in tags
    assert record_id not in leases().values()


def test_settling_removes_an_app_container_its_row_does_not_name_then_the_image(
    app, tmp_path, job_worker
) -> None:
    """A worker killed after creating the app container but before recording its id: the
    row names no container, yet the settle must remove the labelled one before the image,
    or the image tag stays in use and is never removed."""
    user = User(app.test_client())
    job = deploy(user, "https://github.com/dockyard-tests/never-cloned")
    record_id = job["params"]["deployment_id"]
    assert user.post(f"/api/v1/jobs/{job['id']}/cancel").status_code in (200, 202)
    wait_for(lambda: user.job(job["id"])["status"] == "cancelled", message="the cancel")
    client = docker.from_env()
    tag = f"dockyard-deploy/dockyard-tests-orphan:{uuid.uuid4().hex[:12]}"
    (tmp_path / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nLABEL dockyard.test-nonce={uuid.uuid4().hex}\n"
    )
    client.images.build(path=str(tmp_path), tag=tag, rm=True)
    client.containers.run(
        tag,
        ["sleep", "300"],
        detach=True,
        labels={LABEL_MANAGED: "true", LABEL_DEPLOYMENT: record_id, LABEL_JOB: job["id"]},
    )
    with session_scope() as session:
        session.execute(
            update(Deployment).where(Deployment.id == uuid.UUID(record_id)).values(image=tag)
        )
    with session_scope() as session:
        assert session.get(Deployment, uuid.UUID(record_id)).container_id is None

    settle_after_job(uuid.UUID(job["id"]), client)

    assert labelled(record_id) == []
    assert tag not in {t for image in client.images.list() for t in image.tags}
    assert deployment(user, record_id)["status"] == "stopped"
