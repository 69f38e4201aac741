"""Deploy jobs end to end: the API, a real `celery worker` on the `deploy` queue, git cloning
"GitHub" repositories (local bare repositories through git's insteadOf), the Docker engine
building and running them, and the leased host ports answering."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest
import requests
from sqlalchemy import select

from shared.db import session_scope
from shared.models import PortLease
from tests.helpers import User, direct_url, wait_for
from tests.integration.git_repos import FakeGitHub
from tests.integration.workers import deploy_fleet
from workers.deploy.containers import LABEL_DEPLOYMENT
from workers.deploy.lifecycle import check_deployments

PORTS = (21000, 21039)


@pytest.fixture(scope="module")
def github(tmp_path_factory) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(tmp_path_factory.mktemp("github"))
    for name in ("webapp", "unhealthy", "badbuild", "nodockerfile"):
        fake.publish(name)
    yield fake
    fake.remove_images()


@pytest.fixture(scope="module")
def deploy_worker(github, tmp_path_factory, job_worker):
    with deploy_fleet(
        github,
        tmp_path_factory.mktemp("deploy"),
        "deploy-fleet",
        PORTS,
        8,
        DEPLOY_HEALTH_TIMEOUT="8",
        DEPLOY_REPLACE_GRACE="3",
    ) as worker:
        yield worker


@pytest.fixture()
def user(app, deploy_worker) -> User:
    return User(app.test_client())


def deploy(user: User, url: str, expect: int = 202, **body) -> dict:
    response = user.post("/api/v1/jobs/deploy", json={"repo_url": url, **body})
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def deployment(user: User, deployment_id: str) -> dict:
    response = user.get(f"/api/v1/deployments/{deployment_id}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def deployment_of(user: User, job: dict) -> dict:
    return deployment(user, job["params"]["deployment_id"])


def leases() -> dict[int, str]:
    with session_scope() as session:
        return {
            lease.port: str(lease.deployment_id) for lease in session.scalars(select(PortLease))
        }


def labelled(deployment_id: str) -> list:
    """The deployment's containers, from one list call: sparse, because a full list inspects
    each container afterwards and a container removed in between would raise a 404."""
    return docker.from_env().containers.list(
        all=True, sparse=True, filters={"label": f"{LABEL_DEPLOYMENT}={deployment_id}"}
    )


def stop_and_wait(user: User, deployment_id: str) -> dict:
    response = user.post(f"/api/v1/deployments/{deployment_id}/stop")
    assert response.status_code in (200, 202), response.get_json()
    return wait_for(
        lambda: (d := deployment(user, deployment_id))["status"] == "stopped" and d,
        timeout=30,
        message="the deployment to stop",
    )


def test_full_deploy_answers_on_its_url_then_stops(user, github, deploy_worker) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    sha = github.publish("webapp")
    job = deploy(
        user, github.url("webapp") + ".git", health_path="/health", env={"GREETING": secret}
    )
    done = user.wait_status(job["id"], "succeeded", "failed", "dead", timeout=180)
    assert done["status"] == "succeeded", done["error"]
    url = direct_url(done["result"])
    answer = requests.get(url + "/anything", timeout=5)
    assert answer.status_code == 200 and "greeting set: True" in answer.text
    live = deployment_of(user, job)
    assert live["status"] == "healthy" and live["url"] == done["result"]["url"]
    app = done["result"]["app"]
    assert live["url"] == f"http://{app}.localhost:8080/" and done["result"]["release"] == 1
    assert live["commit"] == sha and sha[:12] in live["image"]
    assert PORTS[0] <= live["port"] <= PORTS[1] and live["container_port"] == 8080
    assert live["env_names"] == ["GREETING"]
    steps = [e["data"]["step"] for e in user.events(job["id"]) if e["type"] == "deploy_step"]
    assert steps == ["validate", "clone", "build", "allocate_port", "run", "health_check", "report"]
    assert all(
        e["data"]["seconds"] >= 0 for e in user.events(job["id"]) if e["type"] == "deploy_step"
    )
    logs = user.get(f"/api/v1/deployments/{live['id']}/logs").get_json()
    assert logs["build"][0]["source"] == "build" and logs["build"][0]["content"]
    # The secret is nowhere: job, deployment, events, logs, the list, the worker's log.
    for path in (
        f"/api/v1/jobs/{job['id']}",
        f"/api/v1/jobs/{job['id']}/events",
        f"/api/v1/jobs/{job['id']}/logs",
        f"/api/v1/deployments/{live['id']}",
        f"/api/v1/deployments/{live['id']}/logs",
        "/api/v1/deployments",
    ):
        assert secret not in user.get(path).get_data(as_text=True), path
    assert secret not in deploy_worker.log()

    stopped = stop_and_wait(user, live["id"])
    assert stopped["stopped_at"]
    assert labelled(live["id"]) == []
    assert live["port"] not in leases()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)


def test_deploys_a_branch_or_a_full_commit_and_explains_an_abbreviated_one(user, github) -> None:
    """`ref` picks what is deployed: a commit by its full id or a branch, not the tip of the
    default branch; a shortened id is refused with a message that says how to give it."""
    older = github.publish("webapp-refs", fixture="webapp", extra={"VERSION": "older"})
    tip = github.publish("webapp-refs", fixture="webapp", extra={"VERSION": "tip"})
    github.branch("webapp-refs", "release", older)
    assert older != tip
    for ref in (older, "release"):
        job = deploy(user, github.url("webapp-refs"), ref=ref, health_path="/health")
        done = user.wait_status(job["id"], "succeeded", "failed", "dead", timeout=180)
        assert done["status"] == "succeeded", done["error"]
        live = deployment_of(user, job)
        assert live["commit"] == older and live["ref"] == ref
        stop_and_wait(user, live["id"])
    job = deploy(user, github.url("webapp-refs"), ref=older[:10])
    done = user.wait_status(job["id"], "failed", "succeeded", "dead", timeout=60)
    assert done["error"]["code"] == "ref_not_found" and done["attempts"] == 1
    assert "full 40-character id" in done["error"]["message"]


def test_failures_clean_up_after_themselves(user, github) -> None:
    jobs = {
        name: deploy(user, github.url(name)) for name in ("unhealthy", "badbuild", "nodockerfile")
    }
    done = {
        name: user.wait_status(job["id"], "failed", "succeeded", "dead", timeout=180)
        for name, job in jobs.items()
    }
    assert {name: job["error"]["code"] for name, job in done.items()} == {
        "unhealthy": "health_check_failed",
        "badbuild": "build_failed",
        "nodockerfile": "dockerfile_missing",
    }
    assert all(job["attempts"] == 1 for job in done.values())  # permanent: not retried
    assert "database is missing" in done["unhealthy"]["error"]["message"]  # the app's last lines
    build_log = user.get(f"/api/v1/jobs/{jobs['badbuild']['id']}/logs").get_json()["items"]
    assert "compiling..." in build_log[0]["content"]
    # The step that failed is an event too, with its duration and error.
    steps = [e["data"] for e in user.events(jobs["badbuild"]["id"]) if e["type"] == "deploy_step"]
    assert [(s["step"], s["outcome"]) for s in steps][-1] == ("build", "failed")
    assert steps[-1]["error"]["code"] == "build_failed" and steps[-1]["seconds"] >= 0
    assert {s["outcome"] for s in steps[:-1]} == {"done"}
    images = {tag for image in docker.from_env().images.list() for tag in image.tags}
    for name, job in jobs.items():
        record = wait_for(
            lambda job=job: (d := deployment_of(user, job))["status"] == "failed" and d,
            message=f"{name} deployment to be failed",
        )
        assert record["error"]["code"] == done[name]["error"]["code"]
        assert labelled(record["id"]) == []
        assert record["id"] not in leases().values()
        if name == "unhealthy":  # built, then removed with the rest
            assert record["image"] and record["image"] not in images


@pytest.mark.parametrize(
    ("repo_url", "code"),
    [
        ("http://github.com/dockyard-tests/webapp", "repo_url_scheme_refused"),
        ("file:///etc/passwd", "repo_url_scheme_refused"),
        ("ext::sh -c touch% /tmp/pwned", "repo_url_scheme_refused"),
        ("ssh://git@github.com/dockyard-tests/webapp", "repo_url_scheme_refused"),
        ("git://github.com/dockyard-tests/webapp", "repo_url_scheme_refused"),
        ("git@github.com:dockyard-tests/webapp.git", "repo_url_scheme_refused"),
        ("https://user:token@github.com/dockyard-tests/webapp", "repo_url_credentials_refused"),
        ("https://token@github.com/dockyard-tests/webapp", "repo_url_credentials_refused"),
        ("https://gitlab.com/dockyard-tests/webapp", "repo_host_not_allowed"),
        ("https://github.com:8443/dockyard-tests/webapp", "repo_host_not_allowed"),
        ("https://github.com.evil.example/a/b", "repo_host_not_allowed"),
        ("https://github.com/dockyard-tests", "invalid_repo_url"),
        ("https://github.com/a/b/c", "invalid_repo_url"),
        ("https://github.com/dockyard-tests/webapp?x=1", "invalid_repo_url"),
        ("https://github.com/-owner/repo", "invalid_repo_name"),
        ("https://github.com/owner/..", "invalid_repo_name"),
        ("https://github.com/own%2Fer/repo", "invalid_repo_name"),
    ],
)
def test_refused_repository_urls(app, repo_url, code) -> None:
    user = User(app.test_client())
    body = deploy(user, repo_url, expect=422)
    assert body["error"]["code"] == code, body


@pytest.mark.parametrize("ref", ["--upload-pack=touch /tmp/x", "-b", "main..dev", "a b", "@{-1}"])
def test_refused_refs(app, ref) -> None:
    user = User(app.test_client())
    body = deploy(user, "https://github.com/dockyard-tests/webapp", expect=422, ref=ref)
    assert body["error"]["code"] == "invalid_ref"


def test_eight_concurrent_deploys_get_eight_distinct_free_ports(app, github, deploy_worker) -> None:
    outsider = socket.socket()
    outsider.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAITs
    outsider.bind(("127.0.0.1", PORTS[0]))  # a port in the range held outside the platform
    outsider.listen()
    try:
        users = [User(app.test_client()) for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            jobs = list(pool.map(lambda u: deploy(u, github.url("webapp")), users))
        done = [
            u.wait_status(j["id"], "succeeded", "failed", "dead", timeout=180)
            for u, j in zip(users, jobs, strict=True)
        ]
        assert [d["status"] for d in done] == ["succeeded"] * 8, [d["error"] for d in done]
        ports = [d["result"]["port"] for d in done]
        assert len(set(ports)) == 8 and PORTS[0] not in ports
        for d in done:
            assert requests.get(direct_url(d["result"]), timeout=5).status_code == 200
    finally:
        outsider.close()
    for u, j in zip(users, jobs, strict=True):
        stop_and_wait(u, j["params"]["deployment_id"])


def test_redeploy_replaces_the_old_one_without_a_gap(user, github) -> None:
    github.publish("webapp", extra={"VERSION": "1"})
    first = user.wait_status(
        deploy(user, github.url("webapp"))["id"], "succeeded", "failed", timeout=180
    )
    assert first["status"] == "succeeded", first["error"]
    old_url = direct_url(first["result"])
    github.publish("webapp", extra={"VERSION": "2"})
    gaps: list[float] = []
    watching = threading.Event()
    watching.set()
    urls = [old_url]

    def watch() -> None:
        while watching.is_set():
            answered = False
            for url in list(urls):
                with contextlib.suppress(requests.RequestException):
                    # refused is instant; a slow answer on a busy machine is not a gap
                    answered |= requests.get(url, timeout=3).status_code == 200
            if not answered:
                gaps.append(time.monotonic())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        second = deploy(user, github.url("webapp"))
        done = user.wait_status(second["id"], "succeeded", "failed", timeout=180)
        assert done["status"] == "succeeded", done["error"]
        urls.append(direct_url(done["result"]))
        assert "version 2" in requests.get(direct_url(done["result"]), timeout=5).text
        old = deployment_of(user, first)
        assert old["replaced_by"] == done["result"]["deployment_id"]
        retired = wait_for(
            lambda: (d := deployment_of(user, first))["status"] == "stopped" and d,
            timeout=30,
            message="the old deployment to retire after the grace period",
        )
        assert retired["stopped_at"]
    finally:
        watching.clear()
        watcher.join()
    assert gaps == []  # at every moment one of them answered
    stop_and_wait(user, done["result"]["deployment_id"])


def test_the_periodic_check_marks_a_dead_app_unhealthy(user, github, settings) -> None:
    job = deploy(user, github.url("webapp"), health_path="/health")
    done = user.wait_status(job["id"], "succeeded", "failed", "dead", timeout=180)
    assert done["status"] == "succeeded", done["error"]
    record_id = done["result"]["deployment_id"]
    engine = docker.from_env()
    check_deployments(engine, settings)
    checked = deployment(user, record_id)
    assert checked["status"] == "healthy" and checked["checked_at"]
    assert (
        "listening on 8080" in user.get(f"/api/v1/deployments/{record_id}/logs").get_json()["app"]
    )
    labelled(record_id)[0].kill()  # the app dies
    check_deployments(engine, settings)
    assert deployment(user, record_id)["status"] == "unhealthy"
    stop_and_wait(user, record_id)
    assert labelled(record_id) == [] and record_id not in leases().values()


def test_active_deployment_quota_and_idempotent_submit(make_app, github, deploy_worker) -> None:
    user = User(make_app(quota_active_deployments=1).test_client())
    key = {"Idempotency-Key": f"deploy-{uuid.uuid4()}"}
    first = user.post("/api/v1/jobs/deploy", json={"repo_url": github.url("webapp")}, headers=key)
    again = user.post("/api/v1/jobs/deploy", json={"repo_url": github.url("webapp")}, headers=key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.get_json()["id"] == again.get_json()["id"]
    refused = user.post("/api/v1/jobs/deploy", json={"repo_url": github.url("unhealthy")})
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_deployments"
    # A redeploy of the running repository replaces it, so it is not refused.
    done = user.wait_status(first.get_json()["id"], "succeeded", "failed", timeout=180)
    assert done["status"] == "succeeded", done["error"]
    redeploy = deploy(user, github.url("webapp"))
    finished = user.wait_status(redeploy["id"], "succeeded", "failed", timeout=180)
    assert finished["status"] == "succeeded", finished["error"]
    for deployment_id in (done["result"]["deployment_id"], finished["result"]["deployment_id"]):
        if deployment(user, deployment_id)["status"] not in ("stopped", "stopping"):
            stop_and_wait(user, deployment_id)


def test_a_replay_is_answered_before_the_deployment_quota(make_app, github, deploy_worker) -> None:
    """A retried request (same Idempotency-Key) gets its original job even when the user is
    at the active-deployments limit now: the quota counts only new submissions."""
    roomy = make_app(quota_active_deployments=2)
    user = User(roomy.test_client())
    key = {"Idempotency-Key": f"deploy-{uuid.uuid4()}"}
    body = {"repo_url": github.url("webapp")}
    first = user.post("/api/v1/jobs/deploy", json=body, headers=key)
    other = deploy(user, github.url("unhealthy"))
    assert first.status_code == 202
    user.client = make_app(quota_active_deployments=1).test_client()  # the limit is now 1
    again = user.post("/api/v1/jobs/deploy", json=body, headers=key)
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["id"] == first.get_json()["id"]
    refused = user.post("/api/v1/jobs/deploy", json={"repo_url": github.url("nodockerfile")})
    assert refused.status_code == 429
    done = user.wait_status(first.get_json()["id"], "succeeded", "failed", timeout=180)
    user.wait_status(other["id"], "failed", "succeeded", timeout=180)
    if done["status"] == "succeeded":
        stop_and_wait(user, done["result"]["deployment_id"])
