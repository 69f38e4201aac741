"""Apps end to end: a real deploy fleet, the GitHub stand-in, the Docker engine and a real
Caddy the deploy workers configure. An app answers at one stable URL through the proxy
while its releases come and go: the switch to a new release is atomic (a client sending 20
requests a second sees no failure and the content change exactly once), a rollback runs a
kept image without cloning or building, a stopped app answers 503, an unknown host 404, and a
restarted proxy gets its routes back from the database."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import docker
import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.apps.names import derived_name
from shared.config import get_settings
from tests.helpers import User, wait_for
from tests.integration.git_repos import FakeGitHub
from tests.integration.proxy import CaddyProxy, caddy_proxy
from tests.integration.workers import deploy_fleet
from workers.deploy.lifecycle import release_stopped_images

PORTS = (21800, 21829)  # inside no other test's range
KEEP = 2


@pytest.fixture(scope="module")
def github(tmp_path_factory) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(tmp_path_factory.mktemp("github"))
    fake.publish("webapp", extra={"VERSION": "1"})
    yield fake
    fake.remove_images()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory) -> Iterator[CaddyProxy]:
    with caddy_proxy(tmp_path_factory.mktemp("proxy")) as running:
        yield running


@pytest.fixture(scope="module")
def fleet(github, proxy, tmp_path_factory, job_worker):
    with deploy_fleet(
        github,
        tmp_path_factory.mktemp("deploy"),
        "apps-fleet",
        PORTS,
        4,
        DEPLOY_HEALTH_TIMEOUT="10",
        DEPLOY_REPLACE_GRACE="2",
        DEPLOY_KEEP_RELEASES=str(KEEP),
        PROXY_PORT=str(proxy.http_port),
        PROXY_ADMIN_URL=proxy.admin_url,
        PROXY_SYNC_INTERVAL="0.5",
    ) as worker:
        yield worker


@pytest.fixture(scope="module")
def api(settings, proxy):
    from api import create_app

    return create_app(replace(settings, proxy_port=proxy.http_port, deploy_keep_releases=KEEP))


@pytest.fixture()
def user(api, fleet) -> User:
    return User(api.test_client())


def deploy(user: User, github: FakeGitHub, expect: int = 202, **body) -> dict:
    response = user.post("/api/v1/jobs/deploy", json={"repo_url": github.url("webapp"), **body})
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def deployed(user: User, github: FakeGitHub, **body) -> dict:
    job = deploy(user, github, **body)
    done = user.wait_status(job["id"], "succeeded", "failed", "dead", timeout=180)
    assert done["status"] == "succeeded", done["error"]
    return done


def app_of(user: User, name: str, expect: int = 200) -> dict:
    response = user.get(f"/api/v1/apps/{name}")
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def answers(proxy: CaddyProxy, name: str, status: int, text: str = "") -> bool:
    try:
        response = proxy.get(name, timeout=2)
    except requests.RequestException:
        return False
    return response.status_code == status and text in response.text


def app_name() -> str:
    return f"app-{uuid.uuid4().hex[:10]}"


class Client:
    """Sends `rate` GETs a second to the app's URL through the proxy (alternating fresh and
    kept-alive connections) and records each outcome in order."""

    def __init__(self, proxy: CaddyProxy, name: str, rate: float = 20.0) -> None:
        self.proxy, self.name, self.period = proxy, name, 1 / rate
        self.outcomes: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # Kept-alive connections retry a GET once on a fresh connection, as browsers and
        # curl do: a route change makes Caddy swap its config, which closes idle
        # connections (one a request may be racing onto). Fresh connections get no retry.
        session = requests.Session()
        once = Retry(total=1, connect=1, read=1, status=0, other=0, allowed_methods={"GET"})
        session.mount("http://", HTTPAdapter(max_retries=once))
        tick = time.monotonic()
        count = 0
        while not self._stop.is_set():
            try:
                response = self.proxy.get(
                    self.name, session=session if count % 2 else None, timeout=5
                )
                if response.status_code == 200:
                    self.outcomes.append(response.text.split(";")[0])
                else:
                    self.failures.append(f"{response.status_code} {response.text[:80]}")
            except requests.RequestException as error:
                self.failures.append(repr(error))
            count += 1
            tick += self.period
            self._stop.wait(max(tick - time.monotonic(), 0))

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def changes(self) -> list[str]:
        """The distinct answers in the order they were first seen, runs collapsed."""
        runs: list[str] = []
        for outcome in self.outcomes:
            if not runs or runs[-1] != outcome:
                runs.append(outcome)
        return runs


def test_releases_switch_atomically_and_roll_back_without_a_build(user, github, proxy) -> None:
    name = app_name()
    first = deployed(user, github, app=name, health_path="/health")
    assert first["result"]["url"] == f"http://{name}.localhost:{proxy.http_port}/"
    assert first["result"]["app"] == name and first["result"]["release"] == 1
    wait_for(lambda: answers(proxy, name, 200, "version 1"), timeout=10, message="the route")
    app = app_of(user, name)
    assert app["url"] == first["result"]["url"] and app["current_release"] == 1
    assert app["current_deployment"] == first["result"]["deployment_id"]
    assert app["status"] == "running" and app["branch"] is None and app["health_path"] == "/health"

    # v2 through a whole redeploy, under a client sending 20 requests a second.
    github.publish("webapp", extra={"VERSION": "2"})
    with Client(proxy, name) as client:
        wait_for(lambda: len(client.outcomes) >= 10, timeout=10, message="traffic before")
        second = deployed(user, github, app=name)
        seen = len(client.outcomes)
        wait_for(lambda: len(client.outcomes) >= seen + 10, timeout=10, message="traffic after")
        old = first["result"]["deployment_id"]
        wait_for(
            lambda: user.get(f"/api/v1/deployments/{old}").get_json()["status"] == "stopped",
            timeout=30,
            message="the old release to retire after the grace period",
        )
        seen = len(client.outcomes)
        wait_for(lambda: len(client.outcomes) >= seen + 10, timeout=10, message="traffic after")
    assert client.failures == []
    assert client.changes() == ["hello from version 1", "hello from version 2"]
    assert second["result"]["release"] == 2 and second["result"]["url"] == app["url"]

    releases = user.get(f"/api/v1/apps/{name}/releases").get_json()["items"]
    assert [(r["version"], r["status"], r["image_kept"]) for r in releases] == [
        ("v2", "healthy", True),
        ("v1", "stopped", True),
    ]
    v1 = releases[1]
    assert v1["deployment_id"] == first["result"]["deployment_id"] and v1["commit"]

    # Rollback to v1: its kept image runs again as v3; no clone, no build.
    response = user.post(f"/api/v1/apps/{name}/rollback", json={"release": 1})
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    done = user.wait_status(job["id"], "succeeded", "failed", "dead", timeout=120)
    assert done["status"] == "succeeded", done["error"]
    steps = [e["data"]["step"] for e in user.events(job["id"]) if e["type"] == "deploy_step"]
    assert "clone" not in steps and "build" not in steps and "reuse_image" in steps
    assert done["result"]["release"] == 3 and done["result"]["image"] == v1["image"]
    wait_for(lambda: answers(proxy, name, 200, "version 1"), timeout=10, message="v3 routed")
    v3 = user.get(f"/api/v1/apps/{name}/releases").get_json()["items"][0]
    assert (v3["version"], v3["rollback_of"], v3["commit"]) == ("v3", 1, v1["commit"])
    assert app_of(user, name)["current_release"] == 3

    # The retention sweep keeps the last KEEP releases' images, whatever their age: with no
    # retention at all, v1 (no longer among the last two) is released, v2 is kept.
    wait_for(
        lambda: (
            user.get(f"/api/v1/deployments/{second['result']['deployment_id']}").get_json()[
                "status"
            ]
            == "stopped"
        ),
        timeout=30,
        message="v2 to retire",
    )
    client_ = docker.from_env()
    try:
        release_stopped_images(
            client_,
            replace(get_settings(), deploy_image_retention=0, deploy_keep_releases=KEEP),
            50,
        )
    finally:
        client_.close()
    kept = {r["version"]: r["image_kept"] for r in user.get(f"/api/v1/apps/{name}/releases")
            .get_json()["items"]}  # fmt: skip
    assert kept == {"v3": True, "v2": True, "v1": False}
    gone = user.post(f"/api/v1/apps/{name}/rollback", json={"release": 1})
    assert gone.status_code == 409 and gone.get_json()["error"]["code"] == "release_image_gone"
    missing = user.post(f"/api/v1/apps/{name}/rollback", json={"release": 99})
    assert missing.status_code == 404


def test_stopped_app_503_unknown_host_404_and_proxy_restart(user, github, proxy) -> None:
    name = app_name()
    done = deployed(user, github, app=name)
    wait_for(lambda: answers(proxy, name, 200, "hello"), timeout=10, message="the route")
    unknown = proxy.get(f"nothing-{uuid.uuid4().hex[:8]}")
    assert unknown.status_code == 404 and "No app is served at this address" in unknown.text
    assert unknown.headers["Content-Type"].startswith("text/plain") and len(unknown.text) < 200

    # The proxy restarts with its start configuration (no routes): rebuilt from the database.
    proxy.restart()
    assert answers(proxy, name, 404)
    started = time.monotonic()
    wait_for(lambda: answers(proxy, name, 200, "hello"), timeout=5, message="routes restored")
    assert time.monotonic() - started < 5

    stop = user.post(f"/api/v1/deployments/{done['result']['deployment_id']}/stop")
    assert stop.status_code == 202
    wait_for(lambda: answers(proxy, name, 503, name), timeout=30, message="503 once stopped")
    assert app_of(user, name)["status"] == "stopped"


def test_app_names_ownership_and_delete(user, api, github, proxy) -> None:
    other = User(api.test_client())
    name = app_name()
    done = deployed(user, github, app=name)
    wait_for(lambda: answers(proxy, name, 200), timeout=10, message="the route")

    taken = deploy(other, github, expect=409, app=name)
    assert taken["error"]["code"] == "app_name_taken"
    for bad in ("A-upper", "1digit", "x", "ends-", "api", "a" * 32, "two--hyphens"):
        refused = deploy(user, github, expect=422, app=bad)
        assert "app" in refused["error"]["details"]["fields"], bad
    for path in ("", "/releases"):
        assert other.get(f"/api/v1/apps/{name}{path}").status_code == 404
    assert other.post(f"/api/v1/apps/{name}/rollback", json={"release": 1}).status_code == 404
    assert other.delete(f"/api/v1/apps/{name}").status_code == 404
    assert name not in [a["name"] for a in other.get("/api/v1/apps").get_json()["items"]]
    assert name in [a["name"] for a in user.get("/api/v1/apps").get_json()["items"]]
    admin = User(api.test_client(), role="admin")
    listed = admin.get("/api/v1/apps?limit=200").get_json()
    assert name in [a["name"] for a in listed["items"]]
    assert admin.get(f"/api/v1/apps/{name}").get_json()["owner_id"] == user.profile["id"]

    # PATCH changes what the next release uses; the values of env are never shown.
    patched = user.client.patch(
        f"/api/v1/apps/{name}",
        headers=user.headers,
        json={"branch": "main", "env": {"GREETING": "hi"}, "auto_deploy": False},
    )
    assert patched.status_code == 200, patched.get_json()
    body = patched.get_json()
    assert (body["branch"], body["env_names"], body["auto_deploy"]) == ("main", ["GREETING"], False)
    assert "hi" not in patched.get_data(as_text=True)

    # A deploy without `app` lands on the name derived from the repository and the owner.
    derived = deployed(user, github, branch="main")
    assert derived["result"]["app"] == derived_name(
        uuid.UUID(user.profile["id"]), "github.com/dockyard-tests/webapp"
    )
    # The branch is remembered: the next release without one deploys it again.
    assert app_of(user, derived["result"]["app"])["branch"] == "main"
    again_derived = deployed(user, github)
    assert again_derived["result"]["app"] == derived["result"]["app"]
    assert again_derived["result"]["release"] == derived["result"]["release"] + 1
    release = user.get(f"/api/v1/deployments/{again_derived['result']['deployment_id']}")
    assert release.get_json()["ref"] == "main"

    deleted = user.delete(f"/api/v1/apps/{name}")
    assert deleted.status_code == 202, deleted.get_json()
    assert deleted.get_json()["stopping"] == [done["result"]["deployment_id"]]
    wait_for(lambda: answers(proxy, name, 404), timeout=30, message="the route removed")
    assert app_of(user, name, expect=404)
    wait_for(
        lambda: (
            user.get(f"/api/v1/deployments/{done['result']['deployment_id']}").get_json()["status"]
            == "stopped"
        ),
        timeout=30,
        message="the deleted app's deployment to stop",
    )
    # Its images go at the next periodic check, whatever the retention: nothing can roll
    # back to a deleted app's release.
    client_ = docker.from_env()
    try:
        release_stopped_images(client_, get_settings(), 50)
    finally:
        client_.close()
    gone = user.get(f"/api/v1/deployments/{done['result']['deployment_id']}").get_json()
    assert gone["image_released_at"] is not None
    # The name is free again: first come, first served.
    again = deploy(other, github, app=name)
    other.wait_status(again["id"], "succeeded", "failed", "dead", timeout=180)
    assert app_of(other, name)["owner_id"] == other.profile["id"]
