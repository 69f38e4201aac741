"""The deploy fleet's limits, end to end: a real `celery worker` on the `deploy` queue with
small limits set through its environment, git cloning "GitHub" repositories (local bare
repositories, or a local HTTP server that stalls, through git's insteadOf), the Docker
engine building and running them. Each promise of docs/jobs.md's "Deploy jobs" section about
a limit is checked where it is enforced: clone deadline and size cap, build memory, the
running container's limits, who sees and stops a deployment, the default container port and
the replace grace."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import docker
import pytest
import requests
from sqlalchemy import select as sql_select

from shared.db import session_scope
from shared.models import DeadLetter
from tests.helpers import User, direct_url, wait_for
from tests.integration.git_repos import FIXTURES, FakeGitHub, SlowGitHttpServer
from tests.integration.test_deploy_jobs import deploy, deployment, deployment_of, stop_and_wait
from tests.integration.workers import Process, celery_worker
from workers.deploy.containers import LABEL_DEPLOYMENT, LABEL_JOB
from workers.deploy.git import CHECKOUT_PREFIX

PORTS = (21400, 21439)  # inside no other test's range
CLONE_TIMEOUT = 3.0
MAX_REPO_BYTES = 1024 * 1024
BUILD_MEMORY = 64 * 1024 * 1024  # the lowest DEPLOY_BUILD_MEMORY accepts
APP_MEMORY = 96 * 1024 * 1024
APP_CPUS = 0.5
APP_PIDS = 48
GRACE = 4.0


class StallingGitServer:
    """A git host that accepts connections, reads git's smart-HTTP request and never answers:
    a clone against it hangs until someone gives up. Records each request line and whether
    the client still holds its connection (a killed git closes it)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.requests: list[str] = []
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            with self.lock:
                self.open.add(connection)
            threading.Thread(target=self._hold, args=(connection,), daemon=True).start()

    def _hold(self, connection: socket.socket) -> None:
        first = True
        while True:
            try:
                data = connection.recv(65536)
            except OSError:
                data = b""
            if not data:  # the client closed its end
                with self.lock:
                    self.open.discard(connection)
                connection.close()
                return
            if first:
                with self.lock:
                    self.requests.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
                first = False

    def open_connections(self) -> int:
        with self.lock:
            return len(self.open)

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for connection in self.open:
                connection.close()


@pytest.fixture(scope="module")
def github(tmp_path_factory) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(tmp_path_factory.mktemp("github"))
    for name in ("webapp", "buildhog"):
        fake.publish(name)
    yield fake
    fake.remove_images()


@pytest.fixture(scope="module")
def checkouts(tmp_path_factory) -> Path:
    """The worker's temporary directory: where its checkouts live while they are built."""
    return tmp_path_factory.mktemp("worker-tmp")


@pytest.fixture(scope="module")
def limits_worker(github, checkouts, tmp_path_factory, job_worker) -> Iterator[Process]:
    settings = {
        "GIT_CONFIG_GLOBAL": str(github.gitconfig),
        # file: the local stand-in for GitHub; http: the stalling server
        "DEPLOY_GIT_PROTOCOLS": "https,http,file",
        "DEPLOY_PORT_RANGE": f"{PORTS[0]}-{PORTS[1]}",
        "DEPLOY_HEALTH_TIMEOUT": "8",
        "DEPLOY_CLONE_TIMEOUT": str(CLONE_TIMEOUT),
        "DEPLOY_MAX_REPO_BYTES": str(MAX_REPO_BYTES),
        "DEPLOY_BUILD_MEMORY": str(BUILD_MEMORY),
        "DEPLOY_MEMORY": str(APP_MEMORY),
        "DEPLOY_CPUS": str(APP_CPUS),
        "DEPLOY_PIDS": str(APP_PIDS),
        "DEPLOY_REPLACE_GRACE": str(GRACE),
        "TMPDIR": str(checkouts),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in settings.items():
            patch.setenv(name, value)
        with celery_worker(
            tmp_path_factory.mktemp("deploy-limits"), "deploy-limits", "deploy", 4
        ) as worker:
            yield worker


@pytest.fixture()
def user(app, limits_worker) -> User:
    return User(app.test_client())


def clone_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(CHECKOUT_PREFIX))


def app_container(deployment_id: str):  # noqa: ANN201 - a docker-py Container
    found = docker.from_env().containers.list(
        all=True, filters={"label": f"{LABEL_DEPLOYMENT}={deployment_id}"}
    )
    assert len(found) == 1, found
    return found[0]


def step_events(user: User, job_id: str) -> list[dict]:
    return [e["data"] for e in user.events(job_id) if e["type"] == "deploy_step"]


def deployed(user: User, repo: str, **body) -> dict:
    """Deploy and wait for the job to succeed; returns the job."""
    done = user.wait_status(
        deploy(user, repo, **body)["id"], "succeeded", "failed", "dead", timeout=120
    )
    assert done["status"] == "succeeded", done["error"]
    return done


def test_a_stalled_clone_times_out_is_retried_then_dead_and_leaves_nothing(
    user, github, checkouts
) -> None:
    """DEPLOY_CLONE_TIMEOUT: a git host that never answers fails the attempt with
    `clone_timeout` (retryable: retried, then dead and dead-lettered); the checkout is
    removed and no git process is left talking to the host."""
    server = StallingGitServer()
    try:
        github.route("stalled", server.url)
        job = deploy(user, github.url("stalled"), max_attempts=2)
        # While git waits on the host, its checkout exists: the check below is not vacuous.
        wait_for(
            lambda: server.requests and clone_dirs(checkouts),
            timeout=60,
            message="git to reach the stalling host",
        )
        assert "info/refs?service=git-upload-pack" in server.requests[0]
        done = user.wait_status(job["id"], "dead", "failed", "succeeded", timeout=60)
        assert (done["status"], done["attempts"]) == ("dead", 2), done
        assert done["error"]["code"] == "clone_timeout"
        assert len(server.requests) >= 2  # each attempt cloned for real
        types = [e["type"] for e in user.events(job["id"])]
        assert types.count("retry_scheduled") == 1 and "dead_lettered" in types
        clones = [s for s in step_events(user, job["id"]) if s["step"] == "clone"]
        assert [(s["outcome"], s["error"]["code"]) for s in clones] == [
            ("failed", "clone_timeout")
        ] * 2
        assert all(CLONE_TIMEOUT <= s["seconds"] < CLONE_TIMEOUT + 5 for s in clones)
        assert clone_dirs(checkouts) == []
        # git gave up for real: its transport helper does not hold the connection open.
        wait_for(
            lambda: server.open_connections() == 0,
            timeout=10,
            message="git's connections to the stalled host to close",
        )
        record = wait_for(
            lambda: (d := deployment_of(user, job))["status"] == "failed" and d,
            message="the deployment to fail",
        )
        assert record["error"]["code"] == "clone_timeout"
        with session_scope() as session:
            letters = wait_for(
                lambda: session.scalars(
                    sql_select(DeadLetter).where(DeadLetter.job_id == uuid.UUID(job["id"]))
                ).all(),
                message="the dead letter",
            )
        assert len(letters) == 1
    finally:
        server.close()


def test_a_checkout_over_the_size_cap_fails_permanently_and_leaves_nothing(
    user, github, checkouts
) -> None:
    """DEPLOY_MAX_REPO_BYTES: a checkout past the cap (2 MiB of files that git packs into a
    few KB, so only the checked-out files pass it) fails `repository_too_large` at once
    (permanent) and is removed. The small fixture app under the same cap deploys in the
    other tests."""
    github.publish("toobig", fixture="webapp", extra={"blob.txt": "0" * 2 * MAX_REPO_BYTES})
    job = deploy(user, github.url("toobig"))
    done = user.wait_status(job["id"], "failed", "dead", "succeeded", timeout=60)
    assert (done["status"], done["attempts"]) == ("failed", 1), done
    assert done["error"]["code"] == "repository_too_large"
    assert str(MAX_REPO_BYTES) in done["error"]["message"]
    assert step_events(user, job["id"])[-1]["step"] == "clone"
    assert clone_dirs(checkouts) == []
    record = wait_for(
        lambda: (d := deployment_of(user, job))["status"] == "failed" and d,
        message="the deployment to fail",
    )
    assert record["error"]["code"] == "repository_too_large" and record["image"] is None


def test_the_size_cap_stops_a_clone_while_it_downloads(user, github, checkouts) -> None:
    """DEPLOY_MAX_REPO_BYTES bounds what reaches the disk, not only what is built: a
    repository whose pack alone is ~4.5 MiB, served by a real git HTTP server at 1 MiB/s
    (the whole download would outlast the clone deadline), is stopped as soon as the
    checkout passes the cap, well before the deadline."""
    blob = os.urandom(4 * MAX_REPO_BYTES).hex()  # 8 MiB of text git packs to ~4.5 MiB
    github.publish("hugepack", fixture="webapp", extra={"blob.txt": blob})
    server = SlowGitHttpServer(github, bytes_per_second=MAX_REPO_BYTES)
    try:
        github.route("hugepack", server.url)
        job = deploy(user, github.url("hugepack"))
        done = user.wait_status(job["id"], "failed", "dead", "succeeded", timeout=60)
        assert (done["status"], done["attempts"]) == ("failed", 1), done
        assert done["error"]["code"] == "repository_too_large"
        clone = step_events(user, job["id"])[-1]
        assert clone["step"] == "clone" and clone["seconds"] < CLONE_TIMEOUT, clone
        wait_for(server.hung_up.is_set, timeout=10, message="git to hang up mid-download")
        assert MAX_REPO_BYTES < server.sent < 3 * MAX_REPO_BYTES
        assert clone_dirs(checkouts) == []
    finally:
        server.close()


def test_a_build_step_over_the_memory_cap_fails_and_the_platform_survives(
    user, github, limits_worker, tmp_path
) -> None:
    """DEPLOY_BUILD_MEMORY: a RUN step allocating 256 MiB under a 64 MiB cap is killed; the
    deploy fails `build_failed` saying why; the worker lives on and deploys the next app."""
    job = deploy(user, github.url("buildhog"))
    done = user.wait_status(job["id"], "failed", "dead", "succeeded", timeout=120)
    assert (done["status"], done["attempts"]) == ("failed", 1), done
    assert done["error"]["code"] == "build_failed"
    message = done["error"]["message"]
    assert "137" in message and "memory" in message and str(BUILD_MEMORY) in message, message
    record = wait_for(
        lambda: (d := deployment_of(user, job))["status"] == "failed" and d,
        message="the deployment to fail",
    )
    assert record["error"]["code"] == "build_failed"
    # The cap is what killed it: the same Dockerfile builds on the engine without one.
    client = docker.from_env()
    tag = f"dockyard-tests/buildhog-uncapped:{uuid.uuid4().hex[:12]}"
    (tmp_path / "Dockerfile").write_text((FIXTURES / "buildhog" / "Dockerfile").read_text())
    try:
        client.images.build(path=str(tmp_path), tag=tag, rm=True, forcerm=True)
    finally:
        client.images.remove(tag, force=True)
    # The platform survives: the same worker process deploys the next app.
    assert limits_worker.popen.poll() is None
    live = deployed(user, github.url("webapp"), health_path="/health")
    assert requests.get(direct_url(live["result"]), timeout=5).status_code == 200
    stop_and_wait(user, live["result"]["deployment_id"])


def _cgroup_value(container, v1: str, v2: str) -> str:  # noqa: ANN001
    """A cgroup limit as the container sees it (cgroup v1 path, else v2)."""
    code, output = container.exec_run(["sh", "-c", f"cat {v1} 2>/dev/null || cat {v2}"])
    assert code == 0, output
    return output.decode().strip()


def test_a_running_deployment_has_the_limits_the_settings_give(user, github) -> None:
    """DEPLOY_MEMORY / DEPLOY_CPUS / DEPLOY_PIDS, all capabilities dropped, no new
    privileges, no restart, bound to the leased port on DEPLOY_BIND_ADDRESS only, labelled:
    read from the engine, then from inside the running container (what the kernel enforces)."""
    done = deployed(user, github.url("webapp"), health_path="/health")
    record_id = done["result"]["deployment_id"]
    container = app_container(record_id)
    host = container.attrs["HostConfig"]
    assert host["Memory"] == APP_MEMORY
    assert host["MemorySwap"] == APP_MEMORY  # no swap on top of the memory limit
    assert host["NanoCpus"] == int(APP_CPUS * 1_000_000_000)
    assert host["PidsLimit"] == APP_PIDS
    assert [c.upper() for c in host["CapDrop"]] == ["ALL"] and not host["CapAdd"]
    assert any(o.startswith("no-new-privileges") for o in host["SecurityOpt"])
    assert host["Privileged"] is False
    assert host["RestartPolicy"]["Name"] == "no"
    assert host["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(done["result"]["port"])}]
    }
    labels = container.attrs["Config"]["Labels"]
    assert labels[LABEL_DEPLOYMENT] == record_id and labels[LABEL_JOB] == done["id"]

    code, status = container.exec_run(["cat", "/proc/1/status"])
    assert code == 0
    fields = dict(line.split(":\t", 1) for line in status.decode().splitlines() if ":\t" in line)
    assert fields["CapEff"].strip() == fields["CapBnd"].strip() == "0" * 16
    assert fields["NoNewPrivs"].strip() == "1"
    memory = _cgroup_value(
        container, "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"
    )
    assert int(memory) == APP_MEMORY
    assert (
        int(_cgroup_value(container, "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"))
        == APP_PIDS
    )
    stop_and_wait(user, record_id)


def test_deployments_are_scoped_to_their_owner_and_admins_see_and_stop_all(
    app, user, github
) -> None:
    """GET /deployments lists only the caller's (an admin's: all); another user's deployment
    answers 404 on GET, /logs and /stop, like its job; an admin reads and stops it."""
    done = deployed(user, github.url("webapp"), health_path="/health")
    record_id = done["result"]["deployment_id"]
    other = User(app.test_client())
    admin = User(app.test_client(), role="admin")
    mine = deployed(other, github.url("webapp"), health_path="/health")
    mine_id = mine["result"]["deployment_id"]

    def listed(who: User, query: str = "") -> set[str]:
        ids: set[str] = set()
        cursor = None
        while True:
            page = who.get(
                f"/api/v1/deployments?limit=20{query}" + (f"&cursor={cursor}" if cursor else "")
            )
            assert page.status_code == 200, page.get_json()
            body = page.get_json()
            ids |= {item["id"] for item in body["items"]}
            cursor = body["next_cursor"]
            if cursor is None:
                return ids

    assert record_id in listed(user) and mine_id not in listed(user)
    assert mine_id in listed(other) and record_id not in listed(other)
    assert record_id not in listed(other, "&status=healthy")
    assert {record_id, mine_id} <= listed(admin)
    for path in ("", "/logs"):
        refused = other.get(f"/api/v1/deployments/{record_id}{path}")
        assert refused.status_code == 404 and refused.get_json()["error"]["code"] == "not_found"
        assert admin.get(f"/api/v1/deployments/{record_id}{path}").status_code == 200
    assert other.get(f"/api/v1/jobs/{done['id']}").status_code == 404  # as its job
    refused = other.post(f"/api/v1/deployments/{record_id}/stop")
    assert refused.status_code == 404 and refused.get_json()["error"]["code"] == "not_found"
    assert deployment(user, record_id)["status"] == "healthy"  # untouched
    assert requests.get(direct_url(done["result"]), timeout=5).status_code == 200

    stopped = stop_and_wait(admin, record_id)
    assert stopped["owner_id"] == user.profile["id"]
    assert deployment(user, record_id)["status"] == "stopped"
    with pytest.raises(requests.ConnectionError):
        requests.get(direct_url(done["result"]), timeout=2)
    stop_and_wait(other, mine_id)


def test_the_default_container_port_is_the_first_exposed_one_else_8000(user, github) -> None:
    """No `container_port`: an image that EXPOSEs a port is reached on it; one that exposes
    none is reached on 8000."""
    github.publish("port-default", fixture="portapp")
    github.publish(
        "port-exposed",
        fixture="portapp",
        extra={
            "PORT": "9090",
            "Dockerfile": (
                "ARG BASE_IMAGE=dockyard/base:bookworm\nFROM ${BASE_IMAGE}\nCOPY . /app/\n"
                'EXPOSE 9090\nUSER 65534:65534\nCMD ["python3", "-u", "/app/app.py"]\n'
            ),
        },
    )
    for repo, port in (("port-exposed", 9090), ("port-default", 8000)):
        done = deployed(user, github.url(repo))
        record = deployment_of(user, done)
        assert record["container_port"] == port, record
        answer = requests.get(direct_url(done["result"]), timeout=5)
        assert answer.status_code == 200 and answer.text.strip() == f"listening on {port}"
        bindings = app_container(record["id"]).attrs["HostConfig"]["PortBindings"]
        assert list(bindings) == [f"{port}/tcp"]
        stop_and_wait(user, record["id"])


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_redeploy_retires_the_old_deployment_only_after_the_grace(user, github) -> None:
    """DEPLOY_REPLACE_GRACE: once the new deployment is healthy the old one keeps serving
    for the grace period, then is `stopped` and its port closed."""
    github.publish("graceful", fixture="webapp", extra={"VERSION": "1"})
    first = deployed(user, github.url("graceful"))
    old_url = direct_url(first["result"])
    github.publish("graceful", fixture="webapp", extra={"VERSION": "2"})
    second = deployed(user, github.url("graceful"))
    new_id = second["result"]["deployment_id"]
    new = deployment(user, new_id)
    old = deployment_of(user, first)
    assert old["replaced_by"] == new_id and old["status"] == "healthy"
    retire_at = _when(old["retire_at"])
    grace = (retire_at - _when(new["healthy_at"])).total_seconds()
    assert GRACE <= grace <= GRACE + 2, grace
    # Right after the new one is healthy, and through the grace, the old one still answers.
    probes = []
    while not probes or (retire_at - datetime.now(UTC)).total_seconds() > 0.5:
        answer = requests.get(old_url, timeout=2)
        probes.append(datetime.now(UTC))
        assert answer.status_code == 200 and "version 1" in answer.text
        time.sleep(0.2)  # pace the probes through the window (nothing to await here)
    assert probes[0] < retire_at  # the first probe fell inside the grace
    retired = wait_for(
        lambda: (d := deployment_of(user, first))["status"] == "stopped" and d,
        timeout=30,
        message="the old deployment to retire",
    )
    assert _when(retired["stopped_at"]) >= retire_at
    with pytest.raises(requests.ConnectionError):
        requests.get(old_url, timeout=2)
    assert "version 2" in requests.get(direct_url(second["result"]), timeout=5).text
    stop_and_wait(user, new_id)
