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
import queue
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout

from shared.errors import PermanentJobError, RetryableJobError
from shared.processors.registry import Limits

LABEL_JOB = "dockyard.job"
LABEL_ATTEMPT = "dockyard.attempt"
LABEL_MANAGED = "dockyard.managed"
WORKDIR = "/work"
PROGRESS_PREFIX = b"DOCKYARD-PROGRESS "
_POLL_SECONDS = 0.2


@dataclass
class SandboxRun:
    exit_code: int
    logs: str
    outputs: dict[str, bytes] = field(default_factory=dict)
    oom_killed: bool = False


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


InputData = bytes | Path


def _tar(files: dict[str, InputData]) -> BinaryIO:
    """A tar stream of the inputs, spooled to disk past a few MB: a large upload is
    streamed into the container, never held in the worker's memory."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115 - returned
    with tarfile.open(fileobj=spool, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.mode = 65534, 65534, 0o644
            if isinstance(data, Path):
                info.size = data.stat().st_size
                with data.open("rb") as handle:
                    archive.addfile(info, handle)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    spool.seek(0)
    return spool


class OutputFollower:
    """Follows a container's stdout/stderr in a thread: keeps the last `limit` bytes as the
    log, and queues the progress lines (`DOCKYARD-PROGRESS <current> <total> <message>`)."""

    def __init__(self, container: Any, limit: int = 1024 * 1024) -> None:
        self._container = container
        self._limit = limit
        self._buffer = bytearray()
        self._pending = b""
        self.truncated = False
        self.progress: queue.SimpleQueue[tuple[int, int, str]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._follow, name="dockyard-logs", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        with contextlib.suppress(Exception):  # the container was killed or removed
            for chunk in self._container.logs(stream=True, follow=True):
                self._buffer += chunk
                if len(self._buffer) > self._limit:
                    del self._buffer[: len(self._buffer) - self._limit]
                    self.truncated = True
                self._pending += chunk
                *lines, self._pending = self._pending.split(b"\n")
                for line in lines:
                    self._parse(line)
                self._pending = self._pending[-4096:]

    def _parse(self, line: bytes) -> None:
        if not line.startswith(PROGRESS_PREFIX):
            return
        parts = line.decode(errors="replace").split(" ", 3)
        try:
            current, total = int(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            return
        self.progress.put((current, total, parts[3].strip() if len(parts) > 3 else ""))

    def wait(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        return bytes(self._buffer).decode(errors="replace")

    def latest_progress(self) -> tuple[int, int, str] | None:
        latest = None
        while not self.progress.empty():
            latest = self.progress.get_nowait()
        return latest


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
    inputs: dict[str, InputData],
    *,
    environment: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    limits: Limits = Limits(),  # noqa: B008 - frozen, never mutated
    entrypoint: list[str] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    on_created: Callable[[Any], None] = lambda _container: None,
    on_progress: Callable[[int, int, str], None] = lambda _c, _t, _m: None,
    on_logs: Callable[[str, bool], None] = lambda _text, _truncated: None,
) -> SandboxRun:
    """Run to completion (or timeout/cancel) and return exit code, logs and /work/out files.

    Progress lines reach `on_progress` while the container runs (from this thread, so it may
    raise to stop the run); `on_logs(text, truncated)` receives the output however the run
    ends. Raises RetryableJobError when the engine is unreachable, PermanentJobError
    ("timeout") after the wall-clock limit, Cancelled when `cancelled()` turns true.
    """
    container = None
    follower: OutputFollower | None = None
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
        with _tar(inputs) as archive:
            container.put_archive(f"{WORKDIR}/in", archive)
        container.start()
        follower = OutputFollower(container)
        deadline = time.monotonic() + limits.timeout_seconds
        while True:
            try:
                status = container.wait(timeout=_POLL_SECONDS)
                break
            except (ReadTimeout, RequestsConnectionError):
                pass  # still running (an engine that is gone fails the kill below)
            if (latest := follower.latest_progress()) is not None:
                on_progress(*latest)
            if cancelled():
                container.kill()
                raise Cancelled()
            if time.monotonic() > deadline:
                container.kill()
                follower.wait()
                logs = follower.text()
                raise PermanentJobError(
                    "timeout",
                    f"The processor ran longer than {limits.timeout_seconds:g} s."
                    + (f" Last output: {logs[-500:]}" if logs else ""),
                )
        follower.wait()
        if (latest := follower.latest_progress()) is not None:
            on_progress(*latest)
        container.reload()
        oom_killed = bool(container.attrs.get("State", {}).get("OOMKilled"))
        outputs: dict[str, bytes] = {}
        if status.get("StatusCode") == 0:
            chunks, _stat = container.get_archive(f"{WORKDIR}/out")
            outputs = _untar(chunks, limits.max_output_bytes)
        return SandboxRun(int(status.get("StatusCode", -1)), follower.text(), outputs, oom_killed)
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
        if follower is not None:
            follower.wait(1.0)
            on_logs(follower.text(), follower.truncated)
