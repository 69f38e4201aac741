"""Running one processor in a fresh, locked-down container through the Docker API.

No network, read-only root filesystem with a small tmpfs for scratch, every capability
dropped, no-new-privileges, an unprivileged user, and limits on memory, CPU and processes.
Input and output pass through the Docker API's attach stream, never through bind mounts of
worker paths: the inputs as a tar on stdin (unpacked into an anonymous volume), the outputs
as a tar on stdout after a marker line that follows the progress lines. So a worker can
drive a Docker engine on another host (DOCKER_HOST), and no copy API call (each one mounts
the container's filesystem, ~75 ms) is needed. Containers carry labels naming job and
attempt and are always removed, whatever happens.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import socket
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException, ImageNotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout

from shared.errors import PermanentJobError
from shared.processors.registry import Limits
from workers.docker_errors import ENGINE_ERRORS, engine_failure

LABEL_JOB = "dockyard.job"
LABEL_ATTEMPT = "dockyard.attempt"
LABEL_MANAGED = "dockyard.managed"
WORKDIR = "/work"
PROGRESS_PREFIX = b"DOCKYARD-PROGRESS "
OUTPUT_MARKER = b"DOCKYARD-OUTPUT-TAR"
_POLL_SECONDS = 0.5  # cancel within 2 s needs no finer; each poll is an HTTP request


@dataclass
class SandboxRun:
    exit_code: int
    logs: str
    outputs: dict[str, bytes] = field(default_factory=dict)
    oom_killed: bool = False


class Cancelled(Exception):
    """The job was cancelled while its container ran; the container was killed."""


_clients: dict[tuple[int, str], docker.DockerClient] = {}


def docker_client() -> docker.DockerClient:
    """A client for DOCKER_HOST (or the local socket), one per process and engine address
    (it negotiates the API version once); an unreachable engine is retryable."""
    key = (os.getpid(), os.environ.get("DOCKER_HOST", ""))
    if key in _clients:
        return _clients[key]
    try:
        _clients[key] = docker.from_env(timeout=30)
        return _clients[key]
    except DockerException as error:
        raise engine_failure(error) from error


InputData = bytes | Path


def _tar(files: dict[str, InputData]) -> tempfile.SpooledTemporaryFile[bytes]:
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


def _feed_stdin(stdin: Any, inputs: dict[str, InputData]) -> None:
    """Send the inputs as a tar stream on the container's stdin, then end it (half-close).

    The processor program unpacks it into /work/in. Through the attach API this costs a
    fraction of an archive copy (which mounts the container's filesystem), and it needs no
    path shared with the engine's host either. A container that never reads its stdin (or
    was killed) simply breaks the pipe, which is not an error here.
    """
    raw = getattr(stdin, "_sock", stdin)
    with contextlib.suppress(OSError), _tar(inputs) as archive:
        while chunk := archive.read(256 * 1024):
            raw.sendall(chunk)
        raw.shutdown(socket.SHUT_WR)


class ContainerOutput:
    """Reads the container's attached stdout and stderr in a thread (Docker's multiplexed
    stream: 8-byte frame headers). Keeps the last `log_limit` bytes as the log, queues the
    progress lines (`DOCKYARD-PROGRESS <current> <total> <message>` on stdout), and after the
    marker line `DOCKYARD-OUTPUT-TAR` spools the rest of stdout, the tar of the processor's
    output files, to disk up to `output_limit` bytes."""

    def __init__(self, stream: Any, output_limit: int, log_limit: int = 1024 * 1024) -> None:
        self._stream = stream
        self._output_limit = output_limit
        self._log_limit = log_limit
        self._log = bytearray()
        self._pending = b""
        self.truncated = False
        self.output = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
        self.output_size = 0
        self.has_output = False
        self.progress: queue.SimpleQueue[tuple[int, int, str]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._follow, name="dockyard-output", daemon=True)
        self._thread.start()

    def _read_exactly(self, size: int) -> bytes | None:
        data = bytearray()
        while len(data) < size:
            chunk = self._stream.read(size - len(data))
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def _follow(self) -> None:
        with contextlib.suppress(Exception):  # the container was killed or removed
            while (header := self._read_exactly(8)) is not None:
                payload = self._read_exactly(int.from_bytes(header[4:8], "big"))
                if payload is None:
                    return
                if header[0] == 1 and self.has_output:
                    self._keep_output(payload)
                else:
                    self._keep_log(payload, parse=header[0] == 1)

    def _keep_output(self, payload: bytes) -> None:
        self.output_size += len(payload)
        if self.output_size <= self._output_limit:
            self.output.write(payload)

    def _keep_log(self, payload: bytes, parse: bool) -> None:
        if parse:
            self._pending += payload
            *lines, self._pending = self._pending.split(b"\n")
            for index, line in enumerate(lines):
                if line == OUTPUT_MARKER:
                    self.has_output = True
                    rest = b"\n".join(lines[index + 1 :] + [self._pending])
                    self._pending = b""
                    self._append_log(payload[: len(payload) - len(rest)])
                    self._keep_output(rest)
                    return
                self._parse(line)
            self._pending = self._pending[-4096:]
        self._append_log(payload)

    def _append_log(self, data: bytes) -> None:
        self._log += data
        if len(self._log) > self._log_limit:
            del self._log[: len(self._log) - self._log_limit]
            self.truncated = True

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
        return bytes(self._log).decode(errors="replace")

    def latest_progress(self) -> tuple[int, int, str] | None:
        latest = None
        while not self.progress.empty():
            latest = self.progress.get_nowait()
        return latest

    def files(self) -> dict[str, bytes]:
        """The output files (empty without the marker); output_too_large past the limit."""
        if self.output_size > self._output_limit:
            raise PermanentJobError(
                "output_too_large", f"The processor's output exceeds {self._output_limit} bytes."
            )
        if not self.has_output:
            return {}
        self.output.seek(0)
        files: dict[str, bytes] = {}
        try:
            with tarfile.open(fileobj=self.output, mode="r|") as archive:
                for member in archive:
                    extracted = archive.extractfile(member) if member.isfile() else None
                    if extracted is not None:
                        files[member.name.rsplit("/", 1)[-1]] = extracted.read()
        except tarfile.TarError as error:
            raise PermanentJobError(
                "processor_failed", f"The processor's output is not a valid archive: {error}"
            ) from error
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
        # Output is read from the attached streams; nothing needs the engine's log files.
        "log_config": {"type": "none"},
        "labels": {LABEL_MANAGED: "true", **labels},
    }


@dataclass(frozen=True)
class ContainerSpec:
    """What one sandboxed run starts: the image and command, the environment and labels it
    gets, and the limits it runs under (applied by `container_options`)."""

    image: str
    command: list[str]
    entrypoint: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    limits: Limits = Limits()


@dataclass(frozen=True)
class Hooks:
    """How the caller follows and steers a run. `cancelled` is polled while the container
    runs; `on_created` sees the container before it starts; progress lines reach
    `on_progress` while it runs (from the calling thread, so it may raise to stop the run);
    `on_logs(text, truncated)` receives the output however the run ends."""

    cancelled: Callable[[], bool] = lambda: False
    on_created: Callable[[Any], None] = lambda _container: None
    on_progress: Callable[[int, int, str], None] = lambda _c, _t, _m: None
    on_logs: Callable[[str, bool], None] = lambda _text, _truncated: None


def run(
    client: docker.DockerClient,
    spec: ContainerSpec,
    inputs: dict[str, InputData],
    hooks: Hooks = Hooks(),  # frozen, never mutated
) -> SandboxRun:
    """Run to completion (or timeout/cancel) and return exit code, logs and /work/out files.

    Raises RetryableJobError when the engine is unreachable, PermanentJobError ("timeout")
    after the wall-clock limit, Cancelled when `hooks.cancelled()` turns true. The container
    is removed however the run ends.
    """
    container = None
    follower: ContainerOutput | None = None
    attached: Any = None
    try:
        container = _create(client, spec)
        hooks.on_created(container)
        attached = client.api.attach_socket(
            container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        )
        follower = ContainerOutput(attached, spec.limits.max_output_bytes)
        _start(container, attached, inputs)
        status = _wait(container, follower, spec.limits, hooks)
        return _collect(container, follower, status, hooks.on_progress)
    except ENGINE_ERRORS as error:
        raise engine_failure(
            error, "sandbox_error", "Docker refused the job", missing_image_is_retryable=True
        ) from error
    finally:
        _clean_up(container, follower, attached, hooks.on_logs)


def _create(client: docker.DockerClient, spec: ContainerSpec) -> Any:
    """Create the locked-down container, stdin open for the inputs' tar stream."""
    try:
        return client.containers.create(
            spec.image,
            spec.command,
            entrypoint=spec.entrypoint,
            environment={**spec.environment, "DOCKYARD_INPUT": "stdin-tar"},
            stdin_open=True,  # docker-py also sets StdinOnce: EOF when we half-close
            **container_options(spec.limits, spec.labels),
        )
    except ImageNotFound as error:
        raise PermanentJobError(
            "image_missing", f"Processor image {spec.image} is missing."
        ) from error


def _start(container: Any, attached: Any, inputs: dict[str, InputData]) -> None:
    """Start the container, then stream the inputs to it from a thread: a large input must
    not hold up the wait loop that watches for cancel and timeout."""
    container.start()
    threading.Thread(
        target=_feed_stdin, args=(attached, inputs), name="dockyard-stdin", daemon=True
    ).start()


def _wait(
    container: Any, follower: ContainerOutput, limits: Limits, hooks: Hooks
) -> dict[str, Any]:
    """Wait for the container to exit and return its status. Short polls, not one long
    wait: between them progress is passed on and a cancel or the wall-clock limit kills the
    container (Cancelled, PermanentJobError "timeout")."""
    deadline = time.monotonic() + limits.timeout_seconds
    while True:
        try:
            status: dict[str, Any] = container.wait(timeout=_POLL_SECONDS)
            return status
        except (ReadTimeout, RequestsConnectionError):
            pass  # still running (an engine that is gone fails the kill below)
        _pass_progress(follower, hooks.on_progress)
        if hooks.cancelled():
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


def _pass_progress(follower: ContainerOutput, on_progress: Callable[[int, int, str], None]) -> None:
    """Only the latest progress line is passed on: the lines in between are already stale."""
    if (latest := follower.latest_progress()) is not None:
        on_progress(*latest)


def _collect(
    container: Any,
    follower: ContainerOutput,
    status: dict[str, Any],
    on_progress: Callable[[int, int, str], None],
) -> SandboxRun:
    """The exited container's result: its output files on success, else whether the
    kernel killed it for memory (asked of the engine only then: it costs a request)."""
    follower.wait()
    _pass_progress(follower, on_progress)
    exit_code = int(status.get("StatusCode", -1))
    if exit_code == 0:
        outputs = follower.files()
        return SandboxRun(exit_code, follower.text(), outputs)
    container.reload()
    oom_killed = bool(container.attrs.get("State", {}).get("OOMKilled"))
    return SandboxRun(exit_code, follower.text(), {}, oom_killed)


def _clean_up(
    container: Any,
    follower: ContainerOutput | None,
    attached: Any,
    on_logs: Callable[[str, bool], None],
) -> None:
    """Remove the container first (that ends the attached stream, so the reader thread
    finishes), then hand over the logs and close the streams. Whatever was created is
    passed; None for what was not."""
    if container is not None:
        with contextlib.suppress(Exception):  # the reaper removes whatever is left
            container.remove(v=True, force=True)
    if follower is not None:
        follower.wait(1.0)
        on_logs(follower.text(), follower.truncated)
        follower.output.close()
    if attached is not None:
        with contextlib.suppress(OSError):
            attached.close()
