"""Running, inspecting and removing a deployment's container."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container
from docker.types import LogConfig
from requests.exceptions import ConnectionError as RequestsConnectionError

from shared.config import Settings
from workers.docker_errors import ENGINE_ERRORS, engine_failure

log = logging.getLogger(__name__)
LABEL_DEPLOYMENT = "dockyard.deployment"
LABEL_JOB = "dockyard.deploy-job"
LABEL_MANAGED = "dockyard.managed-deployment"
DEFAULT_PORT = 8000

if TYPE_CHECKING:
    from docker.api.container import _RestartPolicy

#: Docker's restart policy "no", said explicitly: the engine never restarts an app by itself.
#: types-docker's TypedDict lists only "always" and "on-failure" as names, hence the ignore.
_NO_RESTART: _RestartPolicy = {"Name": "no"}  # type: ignore[typeddict-item]


def exposed_port(client: docker.DockerClient, image: str) -> int:
    """The image's first exposed TCP port, else 8000."""
    config = client.images.get(image).attrs.get("Config") or {}
    ports = sorted(
        int(spec.split("/")[0])
        for spec in (config.get("ExposedPorts") or {})
        if spec.endswith("/tcp") and spec.split("/")[0].isdigit()
    )
    return ports[0] if ports else DEFAULT_PORT


class PortTaken(Exception):
    """The engine could not bind the host port: something outside the platform holds it
    (a port check run from inside a container, or against a remote engine, cannot see it)."""


_PORT_TAKEN = ("port is already allocated", "address already in use")


def start(
    client: docker.DockerClient,
    image: str,
    *,
    deployment_id: str,
    job_id: str,
    container_port: int,
    host_port: int,
    env: dict[str, str],
    network: str,
    settings: Settings,
) -> Container:
    """Run detached on the owner's network (workers/deploy/networks.py) with limits, no
    extra capabilities, bound to the leased port only."""
    try:
        return client.containers.run(
            image,
            detach=True,
            name=f"dockyard-deploy-{deployment_id}",
            environment=env,
            network=network,
            ports={f"{container_port}/tcp": (settings.deploy_bind_address, host_port)},
            mem_limit=settings.deploy_memory,
            memswap_limit=settings.deploy_memory,
            nano_cpus=int(settings.deploy_cpus * 1_000_000_000),
            pids_limit=settings.deploy_pids,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            labels={
                LABEL_MANAGED: "true",
                LABEL_DEPLOYMENT: deployment_id,
                LABEL_JOB: job_id,
            },
            restart_policy=_NO_RESTART,
            log_config=LogConfig(type="json-file", config={"max-size": "10m", "max-file": "2"}),
        )
    except ENGINE_ERRORS as error:
        if isinstance(error, APIError) and any(m in str(error).lower() for m in _PORT_TAKEN):
            # The container was created but could not start: remove it, the port is retried.
            with contextlib.suppress(DockerException, RequestsConnectionError):
                client.containers.get(f"dockyard-deploy-{deployment_id}").remove(force=True)
            raise PortTaken(str(error)) from error
        raise engine_failure(error, "run_failed", "Docker refused to run the app") from error


def logs_tail(client: docker.DockerClient, container_id: str, lines: int = 200) -> str:
    with contextlib.suppress(DockerException, RequestsConnectionError):
        raw = client.containers.get(container_id).logs(tail=lines, timestamps=False)
        return str(raw.decode(errors="replace"))
    return ""


def is_running(client: docker.DockerClient, container_id: str) -> bool:
    try:
        return bool(client.containers.get(container_id).status == "running")
    except NotFound:
        return False


def remove(client: docker.DockerClient, container_id: str | None) -> None:
    """Stop and remove; an already missing container is fine."""
    if not container_id:
        return
    with contextlib.suppress(NotFound):
        client.containers.get(container_id).remove(force=True, v=True)


def remove_for_deployment(client: docker.DockerClient, deployment_id: str) -> None:
    """Remove every container labelled with the deployment: a worker killed between
    creating the app container and recording its id leaves one the row does not name."""
    for container in client.containers.list(
        all=True, filters={"label": f"{LABEL_DEPLOYMENT}={deployment_id}"}
    ):
        remove(client, container.id)


def remove_image(client: docker.DockerClient, tag: str | None) -> None:
    """Drop the tag; an image still used by another deployment's container stays."""
    if not tag:
        return
    try:
        client.images.remove(tag, noprune=False)
    except NotFound:
        pass
    except APIError as error:
        log.warning("image tag kept: %s", error, extra={"event": "image_kept", "image": tag})
