"""CPU and process limits of image builds, as far as the engine enforces them.

The engine's build endpoint (the classic builder, which the Docker API drives) runs each
RUN step in a container with the resources of the build's query: `memory`/`memswap`, and
`cpuperiod`/`cpuquota` (a CFS quota: DEPLOY_BUILD_CPUS CPUs at most, however many the host
has). It has no pids limit. What it has is `cgroupparent`: every step's container is
created under that cgroup, and a `pids.max` written on a parent applies to all of its
descendants. So when the worker can write the engine host's cgroup filesystem (root next to
a local engine whose cgroup driver is `cgroupfs`: `make run`, the tests) each build gets a
fresh parent cgroup with `pids.max = DEPLOY_BUILD_PIDS`, removed after the build; elsewhere
(a worker in a container, a remote engine, the systemd driver) the process limit is not
applied and a warning says so once.

docker-py's `build()` sends `container_limits` as query parameters but accepts only the
four keys it knows; the three above are added to its list of allowed keys.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import docker
import docker.constants
from docker.errors import DockerException
from requests.exceptions import ConnectionError as RequestsConnectionError

from shared.config import Settings

log = logging.getLogger(__name__)
CPU_PERIOD = 100_000  # microseconds, the kernel's default CFS period
CGROUP_ROOT = Path("/sys/fs/cgroup")
_warned = False

_allowed_keys = docker.constants.CONTAINER_LIMITS_KEYS
# docker-py's own list, which build() checks the keys against (the stubs say Sequence).
assert isinstance(_allowed_keys, list)
for _key in ("cpuperiod", "cpuquota", "cgroupparent"):
    if _key not in _allowed_keys:
        _allowed_keys.append(_key)


class BuildLimits(TypedDict, total=False):
    """docker-py's `container_limits`: two of its own keys and the three added above."""

    memory: int
    memswap: int
    cpuperiod: int
    cpuquota: int
    cgroupparent: str


def container_limits(settings: Settings, cgroup_parent: str | None) -> BuildLimits:
    """The build's resource query parameters."""
    limits: BuildLimits = {
        "memory": settings.deploy_build_memory,
        "memswap": settings.deploy_build_memory,  # no swap on top of the memory cap
        "cpuperiod": CPU_PERIOD,
        "cpuquota": int(settings.deploy_build_cpus * CPU_PERIOD),
    }
    if cgroup_parent:
        limits["cgroupparent"] = cgroup_parent
    return limits


def _pids_dir(client: docker.DockerClient) -> Path | None:
    """Where a parent cgroup with a pids limit can be made for this engine, or None."""
    docker_host = os.environ.get("DOCKER_HOST", "")
    if docker_host and not docker_host.startswith("unix://"):
        return None
    try:
        info = client.info()
    except (DockerException, RequestsConnectionError):
        return None
    if info.get("CgroupDriver") != "cgroupfs":
        return None
    if str(info.get("CgroupVersion", "1")) == "2":
        return CGROUP_ROOT if (CGROUP_ROOT / "cgroup.subtree_control").exists() else None
    return CGROUP_ROOT / "pids"


@contextlib.contextmanager
def pids_cgroup(client: docker.DockerClient, settings: Settings) -> Iterator[str | None]:
    """A fresh parent cgroup limited to DEPLOY_BUILD_PIDS processes for one build (its
    name for `cgroupparent`), or None where the worker cannot make one."""
    global _warned
    base = _pids_dir(client)
    name = f"dockyard-build-{uuid.uuid4().hex[:12]}"
    path = base / name if base is not None else None
    try:
        if path is None:
            raise OSError("no writable cgroupfs of a local engine")
        path.mkdir()
        (path / "pids.max").write_text(str(settings.deploy_build_pids))
    except OSError as error:
        if path is not None:
            with contextlib.suppress(OSError):
                path.rmdir()
        if not _warned:
            _warned = True
            log.warning(
                "build process limit not applied (%s); builds keep their memory and CPU limits",
                error,
                extra={"event": "build_pids_unlimited"},
            )
        yield None
        return
    try:
        yield f"/{name}"
    finally:
        # The engine has removed the steps' containers (rm/forcerm), so the cgroup is empty.
        with contextlib.suppress(OSError):
            path.rmdir()
