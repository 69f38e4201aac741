"""Deploy isolation against the real engine: each user's apps (and builds) on a network of
their own behind the host firewall, build CPU/process limits, and deploy `env` encrypted at
rest. A real `celery worker` on the `deploy` queue runs the deploys; the probe app
(tests/fixtures/deploy/probe) reports, from inside its container, what it can connect to."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import docker
import pytest
import requests
from sqlalchemy import text

from shared.clock import now
from shared.db import session_scope
from shared.models import Deployment
from shared.security.crypto import decrypt_env, encrypt_env
from tests.helpers import User, direct_url, wait_for
from tests.integration.git_repos import FakeGitHub
from tests.integration.workers import deploy_fleet
from workers.deploy import firewall, networks
from workers.deploy.lifecycle import check_deployments, delete_stopped_envs

PORTS = (21400, 21419)
BUILD_PIDS = 100
BASE_IMAGE = "dockyard/base:bookworm"


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
        "deploy-isolation",
        PORTS,
        2,
        DEPLOY_HEALTH_TIMEOUT="20",
        # Published on every host interface (the harder case: with the default 127.0.0.1 the
        # engine's port proxy cannot be reached from a container at all).
        DEPLOY_BIND_ADDRESS="0.0.0.0",
        DEPLOY_BUILD_CPUS="0.5",
        DEPLOY_BUILD_PIDS=str(BUILD_PIDS),
    ) as worker:
        yield worker


@pytest.fixture(scope="module", autouse=True)
def _remove_networks() -> Iterator[None]:
    """The networks of this module's users go once their deployments are stopped."""
    yield
    networks.remove_unused(docker.from_env(), 1000)


@pytest.fixture(scope="module")
def host_service() -> Iterator[int]:
    """A stand-in for a platform service listening on all of the host's interfaces (what
    the bridge gateway reaches unless the firewall stops it); answers each connection."""
    server = socket.create_server(("0.0.0.0", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
                connection.close()
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join()
    server.close()


def deploy_probe(user: User, github: FakeGitHub, name: str, **extra) -> dict:
    github.publish(name, "probe", extra={k: str(v) for k, v in extra.pop("files", {}).items()})
    response = user.post(
        "/api/v1/jobs/deploy",
        json={"repo_url": github.url(name), "health_path": "/health", **extra},
    )
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def healthy(user: User, job: dict) -> dict:
    done = user.wait_status(job["id"], "succeeded", "failed", "dead", timeout=180)
    assert done["status"] == "succeeded", done["error"]
    return user.get(f"/api/v1/deployments/{job['params']['deployment_id']}").get_json()


def probe(deployment: dict, path: str) -> dict:
    answer = requests.get(direct_url(deployment) + path, timeout=15)
    assert answer.status_code == 200, answer.text
    return answer.json()


def reach(deployment: dict, host: str, port: int) -> str:
    return probe(deployment, f"/connect?host={host}&port={port}")["result"]


def container_ip(deployment: dict) -> tuple[str, dict]:
    container = docker.from_env().containers.get(f"dockyard-deploy-{deployment['id']}")
    attached = container.attrs["NetworkSettings"]["Networks"]
    return next(iter(attached.values()))["IPAddress"], attached


def from_plain_container(host_port: int) -> str:
    """The same connection from a container on Docker's default bridge (no deploy
    network, no firewall): the control that shows the service is there to be reached."""
    script = (
        "import socket,struct\n"
        "r=[l.split() for l in open('/proc/net/route').read().splitlines()[1:]]\n"
        "g=socket.inet_ntoa(struct.pack('<L',int([f for f in r if f[1]=='00000000'][0][2],16)))\n"
        f"socket.create_connection((g,{host_port}),timeout=3); print('open')\n"
    )
    return (
        docker.from_env()
        .containers.run(BASE_IMAGE, ["python3", "-c", script], remove=True)
        .decode()
    )


def stop(user: User, deployment: dict) -> None:
    response = user.post(f"/api/v1/deployments/{deployment['id']}/stop")
    assert response.status_code in (200, 202), response.get_json()
    wait_for(
        lambda: (
            user.get(f"/api/v1/deployments/{deployment['id']}").get_json()["status"] == "stopped"
        ),
        timeout=30,
        message="the deployment to stop",
    )


def test_apps_reach_neither_other_users_apps_nor_platform_services(
    app, settings, github, deploy_worker, host_service
) -> None:
    alice, bob = User(app.test_client()), User(app.test_client())
    jobs = {
        "alice": deploy_probe(alice, github, "probe-alice"),
        "bob": deploy_probe(bob, github, "probe-bob"),
    }
    mine, theirs = healthy(alice, jobs["alice"]), healthy(bob, jobs["bob"])
    try:
        # Each on its owner's network, and only there.
        my_ip, my_networks = container_ip(mine)
        their_ip, their_networks = container_ip(theirs)
        assert list(my_networks) == [networks.network_name(uuid.UUID(alice.profile["id"]))]
        assert list(their_networks) == [networks.network_name(uuid.UUID(bob.profile["id"]))]
        gateway = probe(mine, "/gateway")["gateway"]
        assert gateway and gateway != probe(theirs, "/gateway")["gateway"]

        # The user's own app works, and can connect to itself: the probe can say "open".
        assert reach(mine, my_ip, 8080) == "open"
        # Another user's app: neither its container address nor its published port.
        assert reach(mine, their_ip, 8080) != "open"
        host_ip = subprocess.run(
            ["hostname", "-I"], capture_output=True, text=True, check=True
        ).stdout.split()[0]
        for address in (gateway, host_ip, "127.0.0.1"):
            assert reach(mine, address, theirs["port"]) != "open", address
        assert from_plain_container(theirs["port"]).strip() == "open"  # it is published
        # Platform services: Redis, PostgreSQL, S3 on the host's loopback and through the
        # bridge gateway; and a service bound on all interfaces, which a container of the
        # default bridge does reach (so only the firewall stands in the way).
        s3_port = int(settings.s3_endpoint_url.rsplit(":", 1)[1])
        for port in (6379, 5432, s3_port, host_service):
            for address in ("127.0.0.1", gateway, host_ip):
                assert reach(mine, address, port) != "open", (address, port)
        assert from_plain_container(host_service).strip() == "open"
        assert reach(theirs, gateway, host_service) != "open"
    finally:
        stop(alice, mine)
        stop(bob, theirs)

    # With no deployment left, each user's network goes with their last stop (removed by the
    # stop task right after it commits `stopped`, which the test saw).
    def left() -> set[str]:
        labelled = docker.from_env().networks.list(filters={"label": networks.LABEL_NETWORK})
        return {n.name for n in labelled}

    owners = {networks.network_name(uuid.UUID(u.profile["id"])) for u in (alice, bob)}
    wait_for(lambda: not owners & left(), timeout=15, message="the users' networks removed")


def iptables_rules() -> str:
    return subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout


def test_host_firewall_rules_are_installed_and_restored(
    deploy_worker, settings, monkeypatch
) -> None:
    jump_in = f"-A INPUT -i {firewall.BRIDGES} -j {firewall.CHAIN_IN}"
    bridges = firewall.BRIDGES
    assert jump_in in iptables_rules()
    assert f"-A DOCKER-USER -i {bridges} ! -o {bridges} -j {firewall.CHAIN_OUT}" in iptables_rules()
    assert f"-A {firewall.CHAIN_OUT} -d 169.254.0.0/16 -j REJECT" in iptables_rules()
    # Rules dropped behind the worker's back come back at the next check of them.
    subprocess.run(["iptables", "-D", *jump_in.split()[1:]], check=True)
    subprocess.run(["iptables", "-F", firewall.CHAIN_OUT], check=True)
    assert jump_in not in iptables_rules()
    monkeypatch.setattr(firewall, "RECHECK", 0.0)
    check_deployments(docker.from_env(), settings)  # the periodic deploy check restores them
    assert jump_in in iptables_rules()
    assert f"-A {firewall.CHAIN_OUT} -d 169.254.0.0/16 -j REJECT" in iptables_rules()


def test_builds_run_isolated_under_cpu_and_process_limits(
    app, github, deploy_worker, host_service
) -> None:
    user = User(app.test_client())
    within = deploy_probe(
        user, github, "probe-build", files={"forks": BUILD_PIDS // 2, "target": host_service}
    )
    live = healthy(user, within)
    try:
        build_log = user.get(f"/api/v1/deployments/{live['id']}/logs").get_json()["build"][0]
        log = build_log["content"]
        assert "cpu-quota 50000" in log  # DEPLOY_BUILD_CPUS=0.5 of a 100000 us period
        assert f"forked {BUILD_PIDS // 2}" in log
        assert "connect closed" in log and "connect open" not in log
        assert "gateway " + probe(live, "/gateway")["gateway"] in log  # the owner's network
    finally:
        stop(user, live)
    beyond = deploy_probe(
        user, github, "probe-forkbomb", files={"forks": BUILD_PIDS * 2}, env={"KEY": "v"}
    )
    done = user.wait_status(beyond["id"], "succeeded", "failed", "dead", timeout=180)
    assert done["status"] == "failed" and done["error"]["code"] == "build_failed", done
    log = user.get(f"/api/v1/jobs/{beyond['id']}/logs").get_json()
    assert "fork refused after" in str(log)
    # A failed deployment never starts again: its env values are deleted at once.
    failed = wait_for(
        lambda: (d := deployment_row(beyond["params"]["deployment_id"])).status == "failed" and d,
        message="the deployment to settle",
    )
    assert failed.env is None and failed.env_names == ["KEY"]


def test_env_values_are_encrypted_at_rest_and_reach_the_app(app, github, deploy_worker) -> None:
    user = User(app.test_client())
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    job = deploy_probe(user, github, "probe-env", env={"APP_SECRET": secret, "OTHER": "x"})
    live = healthy(user, job)
    try:
        with session_scope() as session:
            raw, names = session.execute(
                text("SELECT env, env_names::text FROM deployments WHERE id = :id"),
                {"id": live["id"]},
            ).one()
            dump = session.execute(
                text("SELECT string_agg(d::text, '') FROM deployments d")
            ).scalar_one()
        assert raw.startswith("gAAAAA")  # a Fernet token
        assert secret not in raw and "APP_SECRET" not in raw and secret not in dump
        assert names == '["APP_SECRET", "OTHER"]'
        assert live["env_names"] == ["APP_SECRET", "OTHER"]
        want = hashlib.sha256(secret.encode()).hexdigest()
        assert probe(live, "/env?name=APP_SECRET")["sha256"] == want  # decrypted for the app
    finally:
        stop(user, live)


def deployment_row(deployment_id: str | uuid.UUID) -> Deployment:
    with session_scope() as session:
        row = session.get(Deployment, uuid.UUID(str(deployment_id)))
        session.expunge(row)
        return row


def test_env_is_deleted_once_stopped_past_the_retention(app, settings) -> None:
    owner = uuid.UUID(User(app.test_client()).profile["id"])
    ids = {}
    with session_scope() as session:
        for name, status, stopped_ago in (
            ("old", "stopped", timedelta(days=8)),
            ("recent", "stopped", timedelta(days=6)),
            ("yesterday", "stopped", timedelta(days=1)),
            ("live", "healthy", None),
        ):
            row = Deployment(
                owner_id=owner,
                job_id=uuid.uuid4(),
                repo_url=f"https://github.com/dockyard-tests/env-{name}",
                repo_key=f"dockyard-tests/env-{name}",
                status=status,
                stopped_at=None if stopped_ago is None else now() - stopped_ago,
                env=encrypt_env({"TOKEN": name}, settings),
                env_names=["TOKEN"],
            )
            session.add(row)
            session.flush()
            ids[name] = row.id
    week = dataclasses.replace(settings, deploy_image_retention=7 * 24 * 3600.0)
    assert delete_stopped_envs(week, limit=1000) >= 1
    old, recent, live = (deployment_row(ids[n]) for n in ("old", "recent", "live"))
    assert old.env is None and old.env_names == ["TOKEN"]
    assert decrypt_env(recent.env, settings) == {"TOKEN": "recent"}
    assert decrypt_env(live.env, settings) == {"TOKEN": "live"}
    # Bounded: with no retention at least two are due; a run with a limit of 1 deletes one,
    # the oldest stop first.
    instant = dataclasses.replace(settings, deploy_image_retention=0.0)
    assert delete_stopped_envs(instant, limit=1) == 1
    assert deployment_row(ids["yesterday"]).env is not None
    while delete_stopped_envs(instant, limit=1):
        pass
    assert deployment_row(ids["recent"]).env is None
    assert deployment_row(ids["yesterday"]).env is None
    assert deployment_row(ids["live"]).env is not None


@pytest.fixture()
def scratch_database(settings) -> Iterator[str]:
    """A database of its own, to migrate from before migration 0006."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"{make_url(settings.database_url).database}_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            make_url(settings.database_url).set(database=name).render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migration_0006_encrypts_existing_plaintext_env(settings, scratch_database) -> None:
    from sqlalchemy import create_engine

    from shared.migrate import upgrade

    upgrade(scratch_database, "0005")
    engine = create_engine(scratch_database)
    secret = f"legacy-{uuid.uuid4().hex}"
    with engine.begin() as connection:
        owner = connection.execute(
            text(
                "INSERT INTO users (id, email, password_hash, role) VALUES "
                "(gen_random_uuid(), 'legacy@example.com', 'x', 'user') RETURNING id"
            )
        ).scalar_one()
        connection.execute(
            text("INSERT INTO deployments (id, owner_id, job_id, repo_url, repo_key, "
                 "health_path, status, env) VALUES (gen_random_uuid(), :owner, "
                 "gen_random_uuid(), 'u', 'k', '/', 'stopped', CAST(:env AS jsonb))"),
            {"owner": owner, "env": f'{{"B": "{secret}", "A": "a"}}'},
        )  # fmt: skip
    upgrade(scratch_database, "head")
    with engine.connect() as connection:
        raw, names = connection.execute(text("SELECT env, env_names FROM deployments")).one()
    engine.dispose()
    assert secret not in raw and raw.startswith("gAAAAA")
    assert names == ["A", "B"]
    assert decrypt_env(raw, settings) == {"A": "a", "B": secret}


def test_the_check_removes_networks_of_users_without_active_deployments(app, settings) -> None:
    """A network a stop could not remove (engine down at the time, a deleted owner) goes at
    the next check; one whose owner still has an active deployment stays."""
    client = docker.from_env()
    idle, busy = (uuid.UUID(User(app.test_client()).profile["id"]) for _ in range(2))
    with session_scope() as session:
        session.add(
            Deployment(
                owner_id=busy,
                job_id=uuid.uuid4(),
                repo_url="https://github.com/dockyard-tests/net",
                repo_key="dockyard-tests/net",
                status="healthy",
            )
        )
    for owner in (idle, busy):
        networks.ensure(client, owner, settings)
    try:
        check_deployments(client, settings)
        left = {n.name for n in client.networks.list(filters={"label": networks.LABEL_NETWORK})}
        assert networks.network_name(idle) not in left
        assert networks.network_name(busy) in left
    finally:
        with session_scope() as session:
            session.execute(text("DELETE FROM deployments WHERE owner_id = :o"), {"o": busy})
        networks.remove_if_unused(client, busy)
