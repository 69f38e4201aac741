"""Running one processor in a fresh, locked-down container through the Docker API.

No network, read-only root filesystem with a small tmpfs for scratch, every capability
dropped, no-new-privileges, an unprivileged user, and limits on memory, CPU and processes.
Input goes in and output comes out through the Docker API (archive copy into an anonymous
volume), never through bind mounts of worker paths, so a worker can drive a Docker engine
on another host (DOCKER_HOST). Containers carry labels naming job and attempt and are
always removed, whatever happens.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout

from shared.errors import PermanentJobError, RetryableJobError

LABEL_JOB = "dockyard.job"
LABEL_ATTEMPT = "dockyard.attempt"
LABEL_MANAGED = "dockyard.managed"
WORKDIR = "/work"
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 256 * 1024 * 1024
    cpus: float = 1.0
    pids: int = 64
    timeout_seconds: float = 60.0
    max_output_bytes: int = 64 * 1024 * 1024
    tmpfs_bytes: int = 64 * 1024 * 1024


@dataclass
class SandboxRun:
    exit_code: int
    logs: str
    outputs: dict[str, bytes] = field(default_factory=dict)


class Cancelled(Exception):
    """The job was cancelled while its container ran; the container was killed."""


def docker_client() -> docker.DockerClient:
    """A client for DOCKER_HOST (or the local socket); unreachable engine is retryable."""
    try:
        return docker.from_env(timeout=30)
    except DockerException as error:
        raise RetryableJobError(
            "docker_unavailable", f"Docker engine unreachable: {error}"
        ) from error


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mode = len(data), 65534, 65534, 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _untar(chunks: Any, limit: int) -> dict[str, bytes]:
    """The files of a tar stream; past `limit` bytes the rest is drained (so the connection
    stays usable) and the attempt fails with output_too_large."""
    data = bytearray()
    too_large = False
    for chunk in chunks:
        if too_large:
            continue
        data += chunk
        too_large = len(data) > limit
    if too_large:
        raise PermanentJobError(
            "output_too_large", f"The processor's output exceeds {limit} bytes."
        )
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as archive:
        for member in archive.getmembers():
            if member.isfile():
                extracted = archive.extractfile(member)
                if extracted is not None:
                    files[member.name.split("/", 1)[-1]] = extracted.read()
    return files


def container_options(limits: Limits, labels: dict[str, str]) -> dict[str, Any]:
    """The locked-down settings every processor container gets."""
    return {
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": f"size={limits.tmpfs_bytes},mode=1777"},  # noqa: S108 - in the container
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "user": "65534:65534",
        "mem_limit": limits.memory_bytes,
        "memswap_limit": limits.memory_bytes,
        "nano_cpus": int(limits.cpus * 1_000_000_000),
        "pids_limit": limits.pids,
        "volumes": [WORKDIR],
        "labels": {LABEL_MANAGED: "true", **labels},
    }


def run(
    client: docker.DockerClient,
    image: str,
    command: list[str],
    inputs: dict[str, bytes],
    *,
    environment: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    limits: Limits = Limits(),  # noqa: B008 - frozen, never mutated
    entrypoint: list[str] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    on_created: Callable[[Any], None] = lambda _container: None,
) -> SandboxRun:
    """Run to completion (or timeout/cancel) and return exit code, logs and /work/out files.

    Raises RetryableJobError when the engine is unreachable, PermanentJobError("timeout")
    after the wall-clock limit, Cancelled when `cancelled()` turns true.
    """
    container = None
    try:
        try:
            container = client.containers.create(
                image,
                command,
                entrypoint=entrypoint,
                environment=environment or {},
                **container_options(limits, labels or {}),
            )
        except ImageNotFound as error:
            raise PermanentJobError(
                "image_missing", f"Processor image {image} is missing."
            ) from error
        on_created(container)
        container.put_archive(f"{WORKDIR}/in", _tar(inputs))
        container.start()
        deadline = time.monotonic() + limits.timeout_seconds
        while True:
            try:
                status = container.wait(timeout=_POLL_SECONDS)
                break
            except (ReadTimeout, RequestsConnectionError):
                pass  # still running (an engine that is gone fails the kill below)
            if cancelled():
                container.kill()
                raise Cancelled()
            if time.monotonic() > deadline:
                container.kill()
                logs = container.logs().decode(errors="replace")
                raise PermanentJobError(
                    "timeout",
                    f"The processor ran longer than {limits.timeout_seconds:g} s."
                    + (f" Last output: {logs[-500:]}" if logs else ""),
                )
        logs = container.logs().decode(errors="replace")
        outputs: dict[str, bytes] = {}
        if status.get("StatusCode") == 0:
            chunks, _stat = container.get_archive(f"{WORKDIR}/out")
            outputs = _untar(chunks, limits.max_output_bytes)
        return SandboxRun(int(status.get("StatusCode", -1)), logs, outputs)
    except (APIError, RequestsConnectionError, DockerException) as error:
        if (
            isinstance(error, APIError)
            and error.status_code
            and error.status_code < 500
            and not isinstance(error, ImageNotFound)
        ):
            raise PermanentJobError("sandbox_error", f"Docker refused the job: {error}") from error
        raise RetryableJobError("docker_unavailable", f"Docker engine error: {error}") from error
    finally:
        if container is not None:
            with contextlib.suppress(Exception):  # the reaper removes whatever is left
                container.remove(v=True, force=True)
