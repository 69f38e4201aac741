"""The live build log stream (GET /deployments/{id}/logs/stream) over a real HTTP server,
with real deploys: a `celery worker` on the `deploy` queue cloning from the GitHub stand-in
and building with the Docker engine. One slow build serves most checks: its output arrives
while the job still runs, a dropped connection resumes without duplicates or gaps, the step
markers come in order and the outcome last; then the finished deployment replays."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select, update

from shared.clock import now
from shared.config import get_settings
from shared.db import session_scope
from shared.deploy import log as deploy_log
from shared.models import Deployment, DeploymentLogLine
from tests.helpers import User, wait_for
from tests.integration.git_repos import FakeGitHub
from tests.integration.test_streams import serving, sse_frames
from tests.integration.workers import deploy_fleet
from workers.deploy import live_log

PORTS = (21900, 21919)  # inside no other test's range
#: Prints a line a second while it builds; the nonce file before it defeats the layer cache.
SLOW_DOCKERFILE = """ARG BASE_IMAGE=dockyard/base:bookworm
FROM ${BASE_IMAGE}
COPY . /app/
RUN for i in 1 2 3 4; do echo "line $i"; sleep 1; done
EXPOSE 8080
USER 65534:65534
CMD ["python3", "-u", "/app/app.py"]
"""


@pytest.fixture(scope="module")
def github(tmp_path_factory) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(tmp_path_factory.mktemp("github"))
    fake.publish("badbuild")
    yield fake
    fake.remove_images()


@pytest.fixture(scope="module")
def deploy_worker(github, tmp_path_factory, job_worker):
    with deploy_fleet(
        github, tmp_path_factory.mktemp("deploy"), "deploy-log-fleet", PORTS, 2,
        DEPLOY_HEALTH_TIMEOUT="20",
    ) as worker:  # fmt: skip
        yield worker


@pytest.fixture(scope="module")
def base(app, deploy_worker) -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def owner(app, deploy_worker) -> User:
    return User(app.test_client())


def deploy(user: User, url: str) -> dict:
    response = user.post("/api/v1/jobs/deploy", json={"repo_url": url, "health_path": "/health"})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def open_stream(base: str, user: User, deployment_id: str, after: int | None = None):
    headers = dict(user.headers)
    if after is not None:
        headers["Last-Event-ID"] = str(after)
    return requests.get(
        f"{base}/api/v1/deployments/{deployment_id}/logs/stream",
        headers=headers,
        stream=True,
        timeout=60,
    )


def events(response: requests.Response) -> Iterator[dict]:
    """Each event as {event, id, text, step, at}, until the server ends the stream."""
    for frame in sse_frames(response):
        yield {"event": frame["event"], "id": frame.get("id"), **json.loads(frame["data"])}


def stored_ids(deployment_id: str) -> list[int]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(DeploymentLogLine.id)
                .where(DeploymentLogLine.deployment_id == uuid.UUID(deployment_id))
                .order_by(DeploymentLogLine.id)
            )
        )


@pytest.fixture(scope="module")
def slow_deploy(github, owner, base) -> Iterator[dict]:
    """One slow deploy followed live: the events seen while the job ran (the connection
    dropped after the build's second line and resumed with Last-Event-ID), and the job.
    Stopped afterwards (its container must not outlive the module)."""
    github.publish(
        "slowbuild",
        fixture="webapp",
        extra={"Dockerfile": SLOW_DOCKERFILE, "NONCE": uuid.uuid4().hex},
    )
    job = deploy(owner, github.url("slowbuild"))
    deployment_id = job["params"]["deployment_id"]
    first: list[dict] = []
    status_at_first_line = None
    with open_stream(base, owner, deployment_id) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for event in events(response):
            first.append(event)
            if event["event"] == "output" and event["text"] == "line 1":
                status_at_first_line = owner.job(job["id"])["status"]
            if event["event"] == "output" and event["text"] == "line 2":
                break  # the client goes away mid-build
    with open_stream(base, owner, deployment_id, after=int(first[-1]["id"])) as response:
        assert response.status_code == 200
        rest = list(events(response))  # until the server ends it after the outcome
    done = owner.wait_status(job["id"], "succeeded", "failed", "dead", timeout=120)
    yield {
        "job": job,
        "done": done,
        "deployment_id": deployment_id,
        "first": first,
        "rest": rest,
        "status_at_first_line": status_at_first_line,
    }
    owner.post(f"/api/v1/deployments/{deployment_id}/stop")
    wait_for(
        lambda: (
            owner.get(f"/api/v1/deployments/{deployment_id}").get_json()["status"]
            in ("stopped", "failed")
        ),
        timeout=30,
        message="the slow deploy to stop",
    )


def test_build_output_arrives_while_the_job_runs(slow_deploy) -> None:
    assert slow_deploy["status_at_first_line"] == "running"
    first = slow_deploy["first"]
    line = next(e for e in first if e["text"] == "line 1")
    assert line["event"] == "output" and line["step"] == "build" and line["at"]
    assert not any(e["event"] == "outcome" for e in first)


def test_resume_after_a_dropped_connection_has_no_duplicates_and_no_gaps(slow_deploy) -> None:
    assert slow_deploy["done"]["status"] == "succeeded", slow_deploy["done"]["error"]
    seen = [int(e["id"]) for e in slow_deploy["first"] + slow_deploy["rest"]]
    assert seen == sorted(set(seen))
    assert seen == stored_ids(slow_deploy["deployment_id"])  # every stored line, once
    texts = [e["text"] for e in slow_deploy["first"] + slow_deploy["rest"]]
    assert [t for t in texts if t.startswith("line ")] == ["line 1", "line 2", "line 3", "line 4"]


def test_step_markers_in_order_then_the_outcome_with_the_url(slow_deploy, owner) -> None:
    stream = slow_deploy["first"] + slow_deploy["rest"]
    starts = [e["text"] for e in stream if e["event"] == "step" and e["text"] == e["step"]]
    for earlier, later in (("clone", "build"), ("build", "run"), ("run", "health_check")):
        assert starts.index(earlier) < starts.index(later), starts
    ends = [e["text"] for e in stream if e["event"] == "step" and e["text"] != e["step"]]
    assert any(t.startswith("clone done in ") and "commit" in t for t in ends), ends
    # The app's own output during its health check.
    assert any(
        e["event"] == "output" and e["step"] == "health_check" and "listening on 8080" in e["text"]
        for e in stream
    )
    last = stream[-1]
    assert last["event"] == "outcome"
    deployment = owner.get(f"/api/v1/deployments/{slow_deploy['deployment_id']}").get_json()
    assert json.loads(last["text"]) == {"status": "healthy", "url": deployment["url"]}
    assert deployment["url"] == slow_deploy["done"]["result"]["url"]


def test_a_finished_deployment_replays_and_closes(slow_deploy, owner, base) -> None:
    deployment_id = slow_deploy["deployment_id"]
    with open_stream(base, owner, deployment_id) as response:
        replay = list(events(response))
    assert [int(e["id"]) for e in replay] == stored_ids(deployment_id)
    assert replay[-1]["event"] == "outcome"
    # Resumed after the outcome: nothing left, 204 (a browser stops reconnecting).
    with open_stream(base, owner, deployment_id, after=int(replay[-1]["id"])) as response:
        assert response.status_code == 204
    # Resumed mid-log: only what follows.
    middle = int(replay[len(replay) // 2]["id"])
    with open_stream(base, owner, deployment_id, after=middle) as response:
        assert [int(e["id"]) for e in events(response)] == [
            i for i in stored_ids(deployment_id) if i > middle
        ]


def test_another_users_deployment_is_not_found_an_admins_is_streamed(
    slow_deploy, app, base
) -> None:
    deployment_id = slow_deploy["deployment_id"]
    stranger = User(app.test_client())
    with open_stream(base, stranger, deployment_id) as response:
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    admin = User(app.test_client(), role="admin")
    with open_stream(base, admin, deployment_id) as response:
        assert response.status_code == 200
        assert list(events(response))[-1]["event"] == "outcome"


@pytest.fixture(scope="module")
def failed_deploy(github, owner, base) -> dict:
    job = deploy(owner, github.url("badbuild"))
    deployment_id = job["params"]["deployment_id"]
    with open_stream(base, owner, deployment_id) as response:
        stream = list(events(response))
    return {"job": job, "deployment_id": deployment_id, "stream": stream}


def test_a_failed_build_ends_with_its_error(failed_deploy) -> None:
    stream = failed_deploy["stream"]
    assert any(e["event"] == "output" and "compiling..." in e["text"] for e in stream)
    assert any(e["event"] == "step" and e["text"].startswith("build failed: ") for e in stream)
    outcome = json.loads(stream[-1]["text"])
    assert stream[-1]["event"] == "outcome"
    assert outcome["status"] == "failed" and outcome["error"]["code"] == "build_failed"
    assert outcome["error"]["message"].startswith("The image build failed")


def test_the_log_is_capped_and_a_database_error_never_raises(failed_deploy, monkeypatch) -> None:
    deployment_id = uuid.UUID(failed_deploy["deployment_id"])
    monkeypatch.setattr(live_log, "LIMIT_BYTES", 2000)
    writer = live_log.LiveLog(deployment_id, get_settings().redis_url)
    writer.begin("build")
    for i in range(50):
        writer.output(f"{i:03d} " + "x" * 95 + "\n")
    writer.end("build", "build done in 0.0 s")
    writer.close()
    with session_scope() as session:
        lines = list(
            session.scalars(
                select(DeploymentLogLine)
                .where(DeploymentLogLine.deployment_id == deployment_id)
                .where(DeploymentLogLine.id > max(int(e["id"]) for e in failed_deploy["stream"]))
                .order_by(DeploymentLogLine.id)
            )
        )
        kinds = [line.kind for line in lines]
        texts = [line.text for line in lines]
    assert kinds[0] == kinds[-1] == deploy_log.STEP
    assert texts[-2].startswith("… truncated")
    # The deployment already stored some output: fewer than 2000 bytes' worth of new lines.
    assert 0 < sum(1 for t in texts if t.startswith("0")) < 20
    # Lines for a deployment that does not exist fail their INSERT: logged, not raised.
    ghost = live_log.LiveLog(uuid.uuid4(), get_settings().redis_url)
    ghost.output("nobody reads this\n")
    ghost.close()


def test_expired_logs_are_deleted_and_an_old_deployment_replays_its_build_log(
    failed_deploy, owner, base
) -> None:
    deployment_id = uuid.UUID(failed_deploy["deployment_id"])
    assert stored_ids(str(deployment_id))
    with session_scope() as session:  # failed longer than the retention ago
        session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id)
            .values(
                updated_at=now() - timedelta(seconds=get_settings().deploy_image_retention + 60)
            )
        )
    assert live_log.delete_expired(get_settings(), 1000) >= 1
    assert stored_ids(str(deployment_id)) == []
    # Now like a deployment from before the live log: the job's build log, then the outcome.
    with open_stream(base, owner, str(deployment_id)) as response:
        replay = list(events(response))
    assert any(e["event"] == "output" and "compiling..." in e["text"] for e in replay)
    assert all(e["id"] is None for e in replay[:-1])
    assert replay[-1]["event"] == "outcome" and replay[-1]["id"] == "0"
    assert json.loads(replay[-1]["text"])["error"]["code"] == "build_failed"
    with open_stream(base, owner, str(deployment_id), after=0) as response:
        assert response.status_code == 204
