"""Private repositories end to end: a real deploy fleet clones a repository that a git
smart-HTTP stand-in serves only with its access token (HTTP Basic, the token as the
password, as GitHub takes one), builds and runs it. The token given on `POST /jobs/deploy`
or `PATCH /apps/{app}` opens the clone; without it, or with a wrong one, the job fails
`clone_unauthorized` (permanent) and says to set or renew the token. Then the token is looked
for everywhere it must not be: every API answer about these apps, jobs and deployments, every
row of the database (only its encrypted form is stored), the worker's log and the API's log
records, the worker's temporary directory (checkouts, build contexts) and the built image
(every file of a container made from it, its history and configuration).

Process arguments are covered at the git level (test_private_repos.py
`test_the_token_is_in_no_process_arguments_during_a_clone`: every /proc/*/cmdline read over and
over during a slowed clone), as is the checkout's `.git/config` before it is removed.
"""

from __future__ import annotations

import json
import logging
import secrets
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import requests
from sqlalchemy import text

from shared.apps.releases import decrypt_secret
from shared.db import get_engine, session_scope
from shared.logging_setup import JsonFormatter
from tests.helpers import User, direct_url, wait_for
from tests.integration.git_repos import FakeGitHub, SlowGitHttpServer
from tests.integration.workers import Process, deploy_fleet
from workers.deploy import git

PORTS = (21850, 21869)  # inside no other test's range
FAST = 10**9  # bytes a second: no noticeable delay
REPO = "privaterepo"


def github_token() -> str:
    """A token shaped like GitHub's classic ones: easy to recognise wherever it turns up."""
    alphabet = string.ascii_letters + string.digits
    return "ghp_" + "".join(secrets.choice(alphabet) for _ in range(36))


TOKEN = github_token()
WRONG = github_token()
MARKER = f"checkout-marker-{uuid.uuid4().hex}"  # proves the image scan sees the checkout


@pytest.fixture(scope="module")
def github(tmp_path_factory) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(tmp_path_factory.mktemp("github"))
    fake.publish(REPO, fixture="webapp", extra={"VERSION": "private", "MARKER.txt": MARKER})
    yield fake
    fake.remove_images()


@pytest.fixture(scope="module")
def server(github) -> Iterator[SlowGitHttpServer]:
    """The repository served only with TOKEN (plain http on loopback: a real host is https)."""
    private = SlowGitHttpServer(github, bytes_per_second=FAST, token=TOKEN)
    github.route(REPO, private.url)
    yield private
    private.close()


@pytest.fixture(scope="module")
def worker_tmp(tmp_path_factory) -> Path:
    """The worker's temporary directory: its checkouts and build contexts."""
    return tmp_path_factory.mktemp("private-worker-tmp")


@pytest.fixture(scope="module")
def fleet(github, server, worker_tmp, tmp_path_factory, job_worker) -> Iterator[Process]:
    with deploy_fleet(
        github,
        tmp_path_factory.mktemp("private-deploy"),
        "private-fleet",
        PORTS,
        3,
        DEPLOY_GIT_PROTOCOLS="https,http,file",  # http: the token-guarded stand-in
        DEPLOY_HEALTH_TIMEOUT="10",
        DEPLOY_REPLACE_GRACE="1",
        PROXY_ADMIN_URL="http://127.0.0.1:9",  # no proxy: never another test's Caddy
        TMPDIR=str(worker_tmp),
    ) as worker:
        yield worker


class Records(logging.Handler):
    """Every log record of this process (the API's), formatted as it would be written."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter("tests"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Story:
    """What happened to three apps of one user, and every answer the API gave about them."""

    user: User
    repo_url: str
    apps: dict[str, str] = field(default_factory=dict)  # role -> app name
    jobs: dict[str, dict] = field(default_factory=dict)  # role -> the finished job
    patched: dict = field(default_factory=dict)
    answer: str = ""  # what the app with the token answers at its port
    bodies: dict[str, str] = field(default_factory=dict)  # what was fetched -> response text
    log_lines: list[str] = field(default_factory=list)

    def fetch(self, path: str) -> dict:
        response = self.user.get(path)
        assert response.status_code == 200, (path, response.get_json())
        self.bodies[f"GET {path}"] = response.get_data(as_text=True)
        return response.get_json()

    def deploy(self, role: str, **body) -> dict:
        response = self.user.post(
            "/api/v1/jobs/deploy",
            json={"repo_url": self.repo_url, "app": self.apps[role], "max_attempts": 3, **body},
        )
        assert response.status_code == 202, response.get_json()
        self.bodies[f"POST deploy {role} {len(self.bodies)}"] = response.get_data(as_text=True)
        return response.get_json()

    def wait(self, role: str, job: dict) -> dict:
        done = self.user.wait_status(job["id"], "succeeded", "failed", "dead", timeout=180)
        self.jobs[role] = done
        return done


@pytest.fixture(scope="module")
def story(app, github, fleet) -> Iterator[Story]:
    """Three apps of one user deploy the private repository at once: `token` with the
    token, `none` without, `wrong` with a wrong one; then `none` gets the token by PATCH and
    deploys again (`patched`). Every API answer about them is kept for the leak checks."""
    records = Records()
    logging.getLogger().addHandler(records)
    story = Story(User(app.test_client()), github.url(REPO))
    suffix = uuid.uuid4().hex[:8]
    story.apps = {role: f"priv-{role}-{suffix}" for role in ("token", "none", "wrong")}
    try:
        submitted = {
            "token": story.deploy("token", access_token=TOKEN),
            "none": story.deploy("none"),
            "wrong": story.deploy("wrong", access_token=WRONG),
        }
        refused = story.user.post(  # a bad request carrying the token: refused, not echoed
            "/api/v1/jobs/deploy",
            json={"repo_url": story.repo_url, "app": "Not_A_Name", "access_token": TOKEN},
        )
        assert refused.status_code == 422, refused.get_json()
        story.bodies["POST deploy refused"] = refused.get_data(as_text=True)
        for role, job in submitted.items():
            story.wait(role, job)
        if story.jobs["token"]["status"] == "succeeded":
            story.answer = requests.get(direct_url(story.jobs["token"]["result"]), timeout=5).text

        response = story.user.client.patch(
            f"/api/v1/apps/{story.apps['none']}",
            json={"access_token": TOKEN},
            headers=story.user.headers,
        )
        assert response.status_code == 200, response.get_json()
        story.patched = response.get_json()
        story.bodies["PATCH app"] = response.get_data(as_text=True)
        story.wait("patched", story.deploy("none"))

        collect_api_answers(story)
        story.log_lines = records.lines
        yield story
    finally:
        logging.getLogger().removeHandler(records)
        delete_apps(story)


def delete_apps(story: Story) -> None:
    """Delete the apps and wait for their running releases to stop (containers removed)."""
    stopping = []
    for name in story.apps.values():
        response = story.user.delete(f"/api/v1/apps/{name}")
        if response.status_code == 202:
            stopping += response.get_json()["stopping"]
    for deployment in stopping:
        wait_for(
            lambda d=deployment: (
                story.user.get(f"/api/v1/deployments/{d}").get_json()["status"] == "stopped"
            ),
            timeout=30,
            message=f"deployment {deployment} to stop",
        )


def collect_api_answers(story: Story) -> None:
    """GET every resource about the story's apps, jobs and deployments."""
    story.fetch("/api/v1/apps")
    story.fetch("/api/v1/deployments")
    story.fetch("/api/v1/jobs")
    for name in story.apps.values():
        story.fetch(f"/api/v1/apps/{name}")
        story.fetch(f"/api/v1/apps/{name}/releases")
    for job in story.jobs.values():
        story.fetch(f"/api/v1/jobs/{job['id']}")
        story.fetch(f"/api/v1/jobs/{job['id']}/events")
        story.fetch(f"/api/v1/jobs/{job['id']}/logs")
        deployment = job["params"]["deployment_id"]
        story.fetch(f"/api/v1/deployments/{deployment}")
        story.fetch(f"/api/v1/deployments/{deployment}/logs")


def steps(story: Story, job: dict) -> list[tuple[str, str]]:
    events = story.user.events(job["id"])
    return [(e["data"]["step"], e["data"]["outcome"]) for e in events if e["type"] == "deploy_step"]


def assert_unauthorized(story: Story, job: dict) -> None:
    """Failed for good on the first attempt: refused credentials are not retried."""
    assert (job["status"], job["attempts"], job["max_attempts"]) == ("failed", 1, 3), job
    assert job["error"]["code"] == "clone_unauthorized", job["error"]
    assert "set or renew" in job["error"]["message"]
    assert "access_token" in job["error"]["message"]
    types = [e["type"] for e in story.user.events(job["id"])]
    assert "retry_scheduled" not in types
    done = steps(story, job)
    assert ("clone", "failed") in done and "build" not in [step for step, _ in done]


def test_a_private_repository_deploys_with_the_token_given_on_deploy(story, server) -> None:
    done = story.jobs["token"]
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["app"] == story.apps["token"]
    assert story.answer.startswith("hello from version private")
    app = story.fetch(f"/api/v1/apps/{story.apps['token']}")
    assert app["has_access_token"] is True and "access_token" not in app
    # The host refused the anonymous first request, then took the token as the password.
    assert server.refused >= 1 and server.users == {git.TOKEN_USER}


def test_without_a_token_the_deploy_fails_unauthorized_until_one_is_set(story) -> None:
    assert_unauthorized(story, story.jobs["none"])
    assert story.patched["has_access_token"] is True and "access_token" not in story.patched
    again = story.jobs["patched"]
    assert again["status"] == "succeeded", again["error"]
    assert again["result"]["app"] == story.apps["none"] and again["result"]["release"] == 2
    answer = requests.get(direct_url(again["result"]), timeout=5)
    assert answer.status_code == 200 and "version private" in answer.text


def test_a_wrong_token_fails_unauthorized(story) -> None:
    assert_unauthorized(story, story.jobs["wrong"])
    assert story.fetch(f"/api/v1/apps/{story.apps['wrong']}")["has_access_token"] is True


def test_an_empty_token_removes_it(story) -> None:
    name = story.apps["wrong"]
    response = story.user.client.patch(
        f"/api/v1/apps/{name}", json={"access_token": ""}, headers=story.user.headers
    )
    assert response.status_code == 200 and response.get_json()["has_access_token"] is False
    with session_scope() as session:
        stored = session.execute(
            text("SELECT access_token FROM apps WHERE name = :name"), {"name": name}
        ).scalar_one()
    assert stored is None


# -- the token is nowhere else --------------------------------------------------------------


SECRETS = {"token": TOKEN, "wrong token": WRONG}


def leaks(haystack: str | bytes) -> list[str]:
    """Which of the secrets (as text or as hex, the form bytea shows) `haystack` holds."""
    found = []
    for what, secret in SECRETS.items():
        for needle in (secret, secret.encode().hex()):
            if (needle.encode() if isinstance(haystack, bytes) else needle) in haystack:
                found.append(what)
    return found


def test_no_api_answer_holds_the_token(story) -> None:
    assert len(story.bodies) >= 20, sorted(story.bodies)
    assert {where: leaks(body) for where, body in story.bodies.items() if leaks(body)} == {}


def test_the_database_holds_only_the_encrypted_token(story, settings) -> None:
    """Every row of every table as text (every column, JSON and arrays included)."""
    with get_engine().connect() as connection:
        stored = connection.execute(
            text("SELECT access_token FROM apps WHERE name = :name"),
            {"name": story.apps["token"]},
        ).scalar_one()
        tables = connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        found: dict[str, list[str]] = {}
        for table in tables:
            query = text(f'SELECT t::text FROM "{table}" t')  # noqa: S608 - names from pg_tables
            for row in connection.execute(query).scalars():
                if stored in row:
                    found.setdefault(table, []).append("the encrypted form")
                found.setdefault(table, []).extend(leaks(row))
    assert stored and decrypt_secret(stored, settings) == TOKEN  # the encrypted form
    # The scan reads the column that holds it (the control), and nothing holds the token.
    assert {table: hits for table, hits in found.items() if hits} == {
        "apps": ["the encrypted form"]
    }


def test_no_log_line_holds_the_token(story, fleet) -> None:
    worker_log = fleet.log()
    assert all(job["id"] in worker_log for job in story.jobs.values())  # it logged them
    assert leaks(worker_log) == []
    assert story.log_lines, "the API's log records were not captured"
    assert [line for line in story.log_lines if leaks(line)] == []


def test_no_checkout_or_build_context_left_holds_the_token(story, worker_tmp) -> None:
    holding = [
        path
        for path in worker_tmp.rglob("*")
        if path.is_file() and not path.is_symlink() and leaks(path.read_bytes())
    ]
    assert holding == []
    assert [p.name for p in worker_tmp.iterdir() if p.name.startswith(git.CHECKOUT_PREFIX)] == []


def test_the_image_holds_the_checkout_but_not_the_token(story) -> None:
    """Every byte of a container made from the built image (its files: the checkout that was
    the build context, and the base image's), and the image's history and configuration."""
    image = story.jobs["token"]["result"]["image"]
    client = docker.from_env()
    container = client.containers.create(image, name=f"dyk-private-scan-{uuid.uuid4().hex[:10]}")
    try:
        found: set[str] = set()
        marker = False
        tail = b""
        overlap = max(len(TOKEN.encode().hex()), len(MARKER))
        for chunk in container.export():
            window = tail + chunk
            found.update(leaks(window))
            marker = marker or MARKER.encode() in window
            tail = window[-overlap:]
        history = json.dumps(client.api.history(image))
        inspected = json.dumps(client.api.inspect_image(image))
    finally:
        container.remove(force=True)
        client.close()
    assert marker, "the export did not contain the checkout"
    assert found == set()
    assert leaks(history) == [] and leaks(inspected) == []
