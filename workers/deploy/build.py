"""Building a repository's Dockerfile through the Docker API, with a deadline and memory cap.

The build log is streamed and kept (the job's log); an image is tagged with owner, repo and
commit. A Dockerfile that fails is permanent; an engine that cannot be reached is retryable.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
from requests.exceptions import ReadTimeout

from shared.config import Settings
from shared.deploy.repo_urls import Repository
from shared.errors import PermanentJobError
from workers.deploy import build_limits
from workers.docker_errors import ENGINE_ERRORS, engine_failure

_TAG_UNSAFE = re.compile(r"[^a-z0-9._-]+")
LOG_LIMIT = 512 * 1024


def image_tag(repo: Repository, commit: str) -> str:
    """dockyard-deploy/<owner>-<repo>:<commit12>, lower case and reduced to safe characters."""
    name = _TAG_UNSAFE.sub("-", f"{repo.owner}-{repo.name}".lower()).strip("-.")[:100]
    return f"dockyard-deploy/{name or 'app'}:{commit[:12]}"


class BuildLog:
    """The build's output, its last LOG_LIMIT characters kept for the job's log; `listener`
    (the live log) also gets every chunk as it arrives."""

    def __init__(self, listener: Callable[[str], None] | None = None) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False
        self.listener = listener

    def add(self, text: str) -> None:
        if self.listener is not None:
            self.listener(text)
        self.parts.append(text)
        self.size += len(text)
        while self.size > LOG_LIMIT and len(self.parts) > 1:
            self.size -= len(self.parts.pop(0))
            self.truncated = True

    def text(self) -> str:
        return "".join(self.parts)


#: Exit status of a RUN step killed by SIGKILL: in a build almost always the kernel's OOM
#: killer at the step container's memory cap.
_KILLED = 137


def build_failure(chunk: dict[str, Any], settings: Settings) -> str:
    """The user's message for a failed build, saying why when the engine's answer shows
    it: a step killed at the memory cap otherwise reads as a bare "non-zero code: 137"."""
    message = f"The image build failed: {chunk['error'].strip()[-500:]}"
    if (chunk.get("errorDetail") or {}).get("code") == _KILLED:
        message += (
            f" (the step was killed: most likely it needed more memory than the build's cap,"
            f" DEPLOY_BUILD_MEMORY = {settings.deploy_build_memory} bytes)"
        )
    return message


def build(
    client: docker.DockerClient,
    context: Path,
    tag: str,
    settings: Settings,
    log: BuildLog,
    network: str | None = None,
) -> str:
    """Build `context` as `tag`, its RUN steps on `network` (the owner's) under the memory,
    CPU and process limits of build_limits.py; returns the image id."""
    with build_limits.pids_cgroup(client, settings) as cgroup_parent:
        return _build(client, context, tag, settings, log, network, cgroup_parent)


def _build(
    client: docker.DockerClient,
    context: Path,
    tag: str,
    settings: Settings,
    log: BuildLog,
    network: str | None,
    cgroup_parent: str | None,
) -> str:
    if not (context / "Dockerfile").is_file():
        raise PermanentJobError(
            "dockerfile_missing", "The repository has no Dockerfile at its root."
        )
    deadline = time.monotonic() + settings.deploy_build_timeout
    image_id: str | None = None
    try:
        stream = client.api.build(
            path=str(context),
            tag=tag,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            # The stubs' TypedDict lacks the keys build_limits adds to docker-py's own list.
            container_limits=build_limits.container_limits(settings, cgroup_parent),  # type: ignore[arg-type]
            network_mode=network,
            # The read timeout is the whole budget: a step may be silent for minutes (a
            # compile without output); the deadline below bounds the build as a whole.
            # (A float, which requests takes; the stubs say int.)
            timeout=settings.deploy_build_timeout,  # type: ignore[arg-type]
        )
        for chunk in stream:
            if "stream" in chunk:
                log.add(chunk["stream"])
            if "error" in chunk:
                log.add(chunk["error"] + "\n")
                raise PermanentJobError("build_failed", build_failure(chunk, settings))
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if time.monotonic() > deadline:
                stream.close()
                raise PermanentJobError(
                    "build_timeout",
                    f"The build ran longer than {settings.deploy_build_timeout:g} s.",
                )
    except ReadTimeout as error:
        raise PermanentJobError(
            "build_timeout", f"The build produced no output for too long: {error}"
        ) from error
    except ENGINE_ERRORS as error:
        raise engine_failure(error, "build_failed", "Docker refused the build") from error
    if image_id is None:
        image_id = client.images.get(tag).id
        # An image the engine found has an Id (the stubs allow None: Model.id reads attrs).
        assert image_id is not None
    return image_id
