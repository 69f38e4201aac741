"""pytest-celery on a machine without a container registry.

pytest-celery's worker and broker fixtures are Docker containers. Its defaults build the worker
image FROM a public Python image and run `redis:latest`; neither can be pulled here. This
conftest overrides exactly those parts, through the override points pytest-celery documents
(the `default_*` fixtures and the container classes), and keeps the rest of its machinery:
`celery_setup`, `celery_worker`, `celery_worker_cluster`, `celery_broker` and their nodes.

- Broker: pytest-celery's Redis vendor (`celery_redis_broker`), on `dockyard/redis-local`,
  the Redis image scripts/compose_images.sh builds for compose. Each test gets a broker of its
  own, so no other test's worker (the session's in-process one, a subprocess fleet) can take
  its messages, and a test can look at exactly which list a message landed in.
- Backend: none from pytest-celery. Dockyard's truth is its job rows in PostgreSQL (and
  Celery's database result backend in the same database); pytest-celery has no PostgreSQL
  vendor, so the workers use the tests' own database on the host.
- Worker: `dockyard/platform`, the image compose runs the fleets from, with the checkout
  mounted read-only at /src ahead of the installed package (as pytest-celery mounts its
  worker's code at /app): a source edit needs no image rebuild. Host networking, so the
  worker reaches the host's PostgreSQL, Redis and S3 on 127.0.0.1 like the tests do.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from flask.testing import FlaskClient
from pytest_celery import (
    DEFAULT_WORKER_CONTAINER_TIMEOUT,
    REDIS_CONTAINER_TIMEOUT,
    CeleryBrokerCluster,
    CeleryTestBroker,
    CeleryTestWorker,
    CeleryWorkerContainer,
    RedisContainer,
    RedisTestBroker,
)
from pytest_docker_tools import container, fxtr
from pytest_docker_tools.exceptions import ContainerFailed

from shared.celery_app import make_celery
from shared.config import ENVIRONMENT_ONLY, SETTINGS

ROOT = Path(__file__).resolve().parents[3]
WORKER_IMAGE = "dockyard/platform:latest"
BROKER_IMAGE = "dockyard/redis-local:latest"
#: Where the checkout is mounted in worker containers.
SOURCE = "/src"
#: Workers name themselves NAME@HOST. Host networking gives a container the host's hostname,
#: so the host part is fixed: job events name the worker that ran each attempt.
WORKER_HOST = "pytest-celery"
#: What a worker container is given of the tests' own environment besides the broker:
#: every variable Dockyard declares (shared/config.py), so it runs with the tests' database,
#: Redis, S3 and shrunken timings.
DECLARED_VARIABLES: tuple[str, ...] = (
    *(s.env for s in SETTINGS),
    *(v.env for v in ENVIRONMENT_ONLY),
)


def worker_environment(broker_url: str) -> dict[str, str]:
    """A worker container's environment: the tests' settings, the test's own broker, and
    the mounted checkout ahead of the code installed in the image."""
    env = {name: os.environ[name] for name in DECLARED_VARIABLES if name in os.environ}
    return {
        **env,
        "CELERY_BROKER_URL": broker_url,
        "PYTHONPATH": SOURCE,
        "LOG_JSON": "false",  # tests read the worker's log lines
    }


# --- images -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def local_images(docker_client: Any) -> None:
    """The images the compose tests use, built by scripts/compose_images.sh only when missing
    (it takes the same lock as every other caller; Docker caches what did not change). The
    code comes from the mounted checkout, so a source edit needs no rebuild; a new dependency
    in pyproject.toml does (`make up` or the compose tests rebuild the image)."""
    import docker.errors

    missing = []
    for image in (WORKER_IMAGE, BROKER_IMAGE):
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    if missing:
        subprocess.run(
            [str(ROOT / "scripts" / "compose_images.sh")],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=1800,
        )


@pytest.fixture(scope="session")
def celery_base_worker_image(docker_client: Any, local_images: None) -> Any:
    """Replaces pytest-celery's `build` of its worker image (FROM a public image)."""
    return docker_client.images.get(WORKER_IMAGE)


# --- broker: pytest-celery's Redis vendor on the local Redis image ----------------------------


class LocalRedisContainer(RedisContainer):
    """pytest-celery's Redis container on the locally built image, with a host URL that is
    right on this machine.

    pytest-docker-tools sees /.dockerenv here and takes the tests for a sibling container: it
    gives the container's own address and port (reachable: dockerd runs in this network
    namespace), and pytest-celery's `host_url` then keeps the port but writes `localhost`,
    which is the machine's own Redis on 6379, not the test's broker."""

    @classmethod
    def image(cls) -> str:
        return BROKER_IMAGE

    @property
    def host_url(self) -> str:
        address, port = self.get_addr("6379/tcp")
        return f"{self.prefix()}{address}:{port}/{self.vhost}"


@pytest.fixture
def default_redis_broker_cls() -> type[RedisContainer]:
    return LocalRedisContainer


#: pytest-celery's, with the wrapper class above (the factory fixes it where it is declared).
default_redis_broker = container(
    image="{default_redis_broker_image}",
    ports=fxtr("default_redis_broker_ports"),
    environment=fxtr("default_redis_broker_env"),
    network="{default_pytest_celery_network.name}",
    wrapper_class=LocalRedisContainer,
    timeout=REDIS_CONTAINER_TIMEOUT,
    command=fxtr("default_redis_broker_command"),
)


@pytest.fixture
def default_redis_broker_image(local_images: None) -> str:
    return BROKER_IMAGE


@pytest.fixture
def celery_broker(celery_redis_broker: RedisTestBroker) -> Iterator[CeleryTestBroker]:
    """Redis only: pytest-celery would also parametrize over RabbitMQ, which Dockyard does not
    use (and whose image cannot be pulled here)."""
    yield celery_redis_broker
    celery_redis_broker.teardown()


@pytest.fixture
def celery_broker_cluster(celery_broker: CeleryTestBroker) -> Iterator[CeleryBrokerCluster]:
    cluster = CeleryBrokerCluster(celery_broker)
    yield cluster
    cluster.teardown()


@pytest.fixture
def celery_backend_cluster() -> None:
    """No pytest-celery backend: results and job rows are in the tests' PostgreSQL."""
    return None


@pytest.fixture
def broker_url(celery_broker: CeleryTestBroker) -> str:
    """The test's broker as the host (and the host-network workers) reach it."""
    return str(celery_broker.config()["host_url"])


@pytest.fixture
def api(make_app: Any, broker_url: str) -> FlaskClient:
    """The API publishing to the test's broker."""
    return make_app(broker_url=broker_url).test_client()


@pytest.fixture
def publisher(broker_url: str) -> Celery:
    """Dockyard's Celery app (celeryconfig) publishing to the test's broker."""
    return make_celery(broker_url)


# --- workers: the platform image running `celery worker` ----------------------------------------


class DockyardWorkerContainer(CeleryWorkerContainer):
    """`celery -A shared.celery_app worker` as the compose fleets run it, on the queues
    `worker_queue()` names (comma-separated). Subclasses made by `worker_class` set the name,
    queues, concurrency and whether beat runs embedded."""

    concurrency = 1
    beat = False

    @property
    def ready_prompt(self) -> str:
        return " ready."

    def ready(self) -> bool:
        """Up once the worker says so. (pytest-docker-tools' check waits for an IP address on
        each network, which a host-network container never has.)"""
        self._container.reload()
        if self.status == "exited":
            raise ContainerFailed(self, f"worker container {self.name} exited:\n{self.logs()}")
        return self.status == "running" and self.ready_prompt in self.logs()

    @classmethod
    def command(cls, *args: str, **kwargs: Any) -> list[str]:
        command = [
            "celery",
            "-A",
            "shared.celery_app",
            "worker",
            "-Q",
            cls.worker_queue(),
            "-n",
            f"{cls.worker_name()}@{WORKER_HOST}",
            "-P",
            "prefork",
            "-c",
            str(cls.concurrency),
            f"--loglevel={cls.log_level()}",
            "--without-gossip",
            "--without-mingle",
        ]
        if cls.beat:  # the schedule file in the image user's (writable) home
            command += ["-B", "-s", "/home/dockyard/beat-schedule"]
        return [*command, *args]

    @classmethod
    def initial_env(
        cls, celery_worker_cluster_config: dict[str, Any], initial: dict[str, str] | None = None
    ) -> dict[str, str]:
        broker = celery_worker_cluster_config["celery_broker_cluster_config"]
        return worker_environment(";".join(broker["host_urls"]))

    @classmethod
    def version(cls) -> str:
        return "image"  # whatever dockyard/platform installs (pyproject.toml's pin)


def worker_class(
    name: str, queues: str, concurrency: int = 1, beat: bool = False
) -> type[DockyardWorkerContainer]:
    """A worker container class for `default_worker_container_cls` (or `second_worker_cls`)."""
    return type(
        f"Worker_{name.replace('-', '_')}",
        (DockyardWorkerContainer,),
        {
            "worker_name": classmethod(lambda cls: name),
            "worker_queue": classmethod(lambda cls: queues),
            "concurrency": concurrency,
            "beat": beat,
        },
    )


class DockyardTestWorker(CeleryTestWorker):
    """pytest-celery's worker node; the hostname is the one the worker gives itself.

    pytest-docker-tools wraps a container in the class fixed where the fixture is declared;
    the node wraps the same container again in the test's own worker class, so `worker_name`
    and `worker_queue` are the ones the worker was started with."""

    def __init__(
        self, container: Any, app: Celery, spec: type[DockyardWorkerContainer] | None = None
    ) -> None:
        if spec is not None:
            container = spec(container._container)
        super().__init__(container, app)

    def hostname(self) -> str:
        return f"{self.worker_name}@{WORKER_HOST}"

    def kill_pid(self, pid: int) -> None:
        """SIGKILL one process inside the worker's container (its PID namespace)."""
        code, output = self.container.exec_run(["sh", "-c", f"kill -KILL {int(pid)}"])
        assert code == 0, output


@pytest.fixture
def celery_setup_worker(
    default_worker_container: DockyardWorkerContainer,
    default_worker_container_cls: type[DockyardWorkerContainer],
    default_worker_app: Celery,
) -> Iterator[DockyardTestWorker]:
    """pytest-celery's, with the node wrapping the container in the test's worker class."""
    worker = DockyardTestWorker(
        default_worker_container, default_worker_app, default_worker_container_cls
    )
    yield worker
    worker.teardown()


@pytest.fixture
def default_worker_container_cls() -> type[DockyardWorkerContainer]:
    """Override per module (or per test) with `worker_class(...)`."""
    return worker_class("files-only", "files")


@pytest.fixture
def default_worker_env(
    default_worker_container_cls: type[CeleryWorkerContainer],
    celery_worker_cluster_config: dict[str, Any],
) -> dict[str, str]:
    return default_worker_container_cls.initial_env(celery_worker_cluster_config)


def worker_container(prefix: str) -> Any:
    """A pytest-docker-tools container fixture for a worker whose class, command and
    environment are the fixtures `{prefix}_cls`, `{prefix}_command` and `{prefix}_env`."""
    return container(
        image="{celery_base_worker_image.id}",
        environment=fxtr(f"{prefix}_env"),
        command=fxtr(f"{prefix}_command"),
        network_mode="host",
        volumes={str(ROOT): {"bind": SOURCE, "mode": "ro"}},
        wrapper_class=DockyardWorkerContainer,
        timeout=DEFAULT_WORKER_CONTAINER_TIMEOUT,
    )


#: Replaces pytest-celery's: no volume of generated code, no published ports, host network.
default_worker_container = worker_container("default_worker")


# A second worker, for tests that need one more (a rescuer, a dead-letter consumer) started
# when the test asks for it: `request.getfixturevalue("second_worker")`.


@pytest.fixture
def second_worker_cls() -> type[DockyardWorkerContainer]:
    """Override per module with `worker_class(...)`."""
    return worker_class("second", "files")


@pytest.fixture
def second_worker_command(second_worker_cls: type[DockyardWorkerContainer]) -> list[str]:
    return second_worker_cls.command()


@pytest.fixture
def second_worker_env(
    second_worker_cls: type[DockyardWorkerContainer], celery_worker_cluster_config: dict[str, Any]
) -> dict[str, str]:
    return second_worker_cls.initial_env(celery_worker_cluster_config)


second_worker_container = worker_container("second_worker")


@pytest.fixture
def second_worker(
    second_worker_container: DockyardWorkerContainer,
    second_worker_cls: type[DockyardWorkerContainer],
    celery_setup_app: Celery,
) -> Iterator[DockyardTestWorker]:
    worker = DockyardTestWorker(second_worker_container, celery_setup_app, second_worker_cls)
    yield worker
    worker.teardown()
