"""Deploy schedules: params checked like a POST /jobs/deploy body, env stored encrypted and
never shown, and, against the real engine (a real `celery worker` on the `deploy` queue, git
cloning the local "GitHub"), a triggered occurrence deploying the probe app and the tick's
next occurrence redeploying it with the same env."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from sqlalchemy import delete, select, text, update

from shared.clock import now
from shared.db import session_scope
from shared.models import Deployment, Job, Schedule
from tests.helpers import User, direct_url, wait_for
from tests.integration.git_repos import FakeGitHub
from tests.integration.workers import deploy_fleet
from workers.schedules import run_schedule_tick

PORTS = (21700, 21709)  # inside no other test's range
DEPLOY = "deploy.repository"


@pytest.fixture(scope="module")
def github(tmp_path_factory) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(tmp_path_factory.mktemp("github"))
    yield fake
    fake.remove_images()


@pytest.fixture(scope="module")
def deploy_worker(github, tmp_path_factory, job_worker):
    with deploy_fleet(
        github,
        tmp_path_factory.mktemp("deploy"),
        "deploy-schedules",
        PORTS,
        2,
        DEPLOY_HEALTH_TIMEOUT="20",
        DEPLOY_REPLACE_GRACE="3",
    ) as worker:
        yield worker


@pytest.fixture(autouse=True)
def _no_schedules_left() -> Iterator[None]:
    """A due schedule left behind would make jobs in whatever test runs a beat next."""
    yield
    with session_scope() as session:
        session.execute(delete(Schedule))


def create(user: User, params: dict, expect: int = 201) -> dict:
    response = user.post(
        "/api/v1/schedules",
        json={
            "name": f"nightly-{uuid.uuid4().hex[:8]}",
            "processor": DEPLOY,
            "params": params,
            "every_seconds": 3600,
        },
    )
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def stored_params(schedule_id: str) -> str:
    """The schedule's params as the database holds them (text)."""
    with session_scope() as session:
        return session.execute(
            text("SELECT params::text FROM schedules WHERE id = :id"), {"id": schedule_id}
        ).scalar_one()


def make_due(schedule_id: str) -> None:
    with session_scope() as session:
        session.execute(
            update(Schedule)
            .where(Schedule.id == uuid.UUID(schedule_id))
            .values(next_run_at=now() - timedelta(seconds=1))
        )


def runs(schedule_id: str) -> list[Job]:
    with session_scope() as session:
        jobs = list(
            session.scalars(
                select(Job)
                .where(Job.schedule_id == uuid.UUID(schedule_id))
                .order_by(Job.created_at)
            )
        )
        session.expunge_all()
        return jobs


def healthy(user: User, job_id: str) -> dict:
    done = user.wait_status(job_id, "succeeded", "failed", "dead", timeout=180)
    assert done["status"] == "succeeded", done["error"]
    return user.get(f"/api/v1/deployments/{done['result']['deployment_id']}").get_json()


def env_hash(deployment: dict, name: str) -> str:
    answer = requests.get(f"{direct_url(deployment)}/env?name={name}", timeout=15)
    assert answer.status_code == 200, answer.text
    return answer.json()["sha256"]


def stop(user: User, deployment_id: str) -> None:
    response = user.post(f"/api/v1/deployments/{deployment_id}/stop")
    assert response.status_code in (200, 202), response.get_json()
    wait_for(
        lambda: user.get(f"/api/v1/deployments/{deployment_id}").get_json()["status"] == "stopped",
        timeout=30,
        message="the deployment to stop",
    )


def test_a_deploy_schedule_deploys_then_redeploys_with_its_env_kept_secret(
    app, settings, github, deploy_worker
) -> None:
    user = User(app.test_client())
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    github.publish("probe-scheduled", "probe")
    schedule = create(
        user,
        {
            "repo_url": github.url("probe-scheduled") + ".git",
            "health_path": "/health",
            "env": {"APP_SECRET": secret},
        },
    )
    assert schedule["params"] == {
        "repo_url": github.url("probe-scheduled"),  # canonical, like a deploy job's
        "ref": None,
        "container_port": None,
        "health_path": "/health",
        "env_names": ["APP_SECRET"],
    }
    raw = stored_params(schedule["id"])
    assert secret not in raw and '"gAAAAA' in raw  # a Fernet token, no plaintext

    # First occurrence: triggered through the API.
    triggered = user.post(f"/api/v1/schedules/{schedule['id']}/trigger")
    assert triggered.status_code == 202, triggered.get_json()
    first = healthy(user, triggered.get_json()["id"])
    want = hashlib.sha256(secret.encode()).hexdigest()
    assert first["env_names"] == ["APP_SECRET"] and env_hash(first, "APP_SECRET") == want

    # Second occurrence: the tick makes it; it replaces the first deployment.
    make_due(schedule["id"])
    assert run_schedule_tick(settings) == {"made": 1}
    second_job = runs(schedule["id"])[-1]
    second = healthy(user, str(second_job.id))
    assert second["id"] != first["id"] and env_hash(second, "APP_SECRET") == want
    assert user.get(f"/api/v1/deployments/{first['id']}").get_json()["replaced_by"] == second["id"]
    wait_for(
        lambda: user.get(f"/api/v1/deployments/{first['id']}").get_json()["status"] == "stopped",
        timeout=30,
        message="the replaced deployment to retire",
    )
    assert [str(job.id) for job in runs(schedule["id"])][-1] == second["job_id"]

    # The secret is in no answer and in no schedules row.
    for path in (
        f"/api/v1/schedules/{schedule['id']}",
        "/api/v1/schedules",
        f"/api/v1/schedules/{schedule['id']}/runs",
        f"/api/v1/jobs/{second_job.id}",
        f"/api/v1/deployments/{second['id']}",
        "/api/v1/deployments",
    ):
        body = user.get(path).get_data(as_text=True)
        assert secret not in body and "gAAAAA" not in body, path
    with session_scope() as session:
        dump = session.execute(text("SELECT string_agg(s::text, '') FROM schedules s")).scalar_one()
    assert secret not in dump
    stop(user, second["id"])


def test_deploy_schedule_params_are_checked_like_a_deploy_body(client) -> None:
    user = User(client)
    for params, code in (
        ({"repo_url": "https://github.com/dockyard-tests"}, "invalid_repo_url"),
        ({"repo_url": "file:///etc/passwd"}, "repo_url_scheme_refused"),
        ({"repo_url": "https://gitlab.com/a/b"}, "repo_host_not_allowed"),
        ({"repo_url": "https://github.com/a/b", "ref": "--upload-pack=x"}, "invalid_ref"),
        ({"repo_url": "https://github.com/a/b", "health_path": "nope"}, "validation_error"),
        ({"repo_url": "https://github.com/a/b", "env": {"1BAD": "x"}}, "validation_error"),
        ({"repo_url": "https://github.com/a/b", "deployment_id": "x"}, "validation_error"),
        ({}, "validation_error"),
    ):
        body = create(user, params, expect=422)["error"]
        assert body["code"] == code, (params, body)
        assert "params" in body["details"]["fields"], body


def test_a_patch_of_params_checks_and_encrypts_again(client) -> None:
    user = User(client)
    schedule = create(user, {"repo_url": "https://github.com/a/b", "env": {"OLD": "one"}})
    before = stored_params(schedule["id"])
    patched = user.client.patch(
        f"/api/v1/schedules/{schedule['id']}",
        json={"params": {"repo_url": "https://github.com/a/c", "env": {"NEW": "two-secret"}}},
        headers=user.headers,
    )
    assert patched.status_code == 200, patched.get_json()
    body = patched.get_json()
    assert body["params"]["repo_url"] == "https://github.com/a/c"
    assert body["params"]["env_names"] == ["NEW"] and "env" not in body["params"]
    after = stored_params(schedule["id"])
    assert after != before and "two-secret" not in after and '"gAAAAA' in after
    refused = user.client.patch(
        f"/api/v1/schedules/{schedule['id']}",
        json={"params": {"repo_url": "https://github.com/a/b/c"}},
        headers=user.headers,
    )
    assert refused.status_code == 422
    assert refused.get_json()["error"]["code"] == "invalid_repo_url"
    renamed = user.client.patch(
        f"/api/v1/schedules/{schedule['id']}", json={"name": "renamed"}, headers=user.headers
    )
    assert renamed.status_code == 200 and stored_params(schedule["id"]) == after


def test_the_deployment_quota_skips_an_occurrence_and_refuses_a_trigger(make_app, settings) -> None:
    user = User(make_app(quota_active_deployments=1).test_client())
    owner = uuid.UUID(user.profile["id"])
    with session_scope() as session:
        session.add(
            Deployment(
                owner_id=owner,
                job_id=uuid.uuid4(),
                repo_url="https://github.com/dockyard-tests/running",
                repo_key="github.com/dockyard-tests/running",
                status="healthy",
                env_names=[],
            )
        )
    schedule = create(user, {"repo_url": "https://github.com/dockyard-tests/other"})
    refused = user.post(f"/api/v1/schedules/{schedule['id']}/trigger")
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_deployments"
    make_due(schedule["id"])
    limited = dataclasses.replace(settings, quota_active_deployments=1)
    assert run_schedule_tick(limited) == {"skipped_deployment_quota": 1}
    assert runs(schedule["id"]) == []
    row = user.get(f"/api/v1/schedules/{schedule['id']}").get_json()
    assert row["last_job_id"] is None
    with session_scope() as session:
        next_run = session.scalar(
            select(Schedule.next_run_at).where(Schedule.id == uuid.UUID(schedule["id"]))
        )
        session.execute(delete(Deployment).where(Deployment.owner_id == owner))
    assert next_run is not None and next_run > now()  # the refused occurrence is passed
