"""The processor sandbox against the real Docker engine and the locally built image."""

from __future__ import annotations

import hashlib
import json
import os
import time

import docker
import pytest
from docker.errors import NotFound

from shared.errors import PermanentJobError, RetryableJobError
from workers import sandbox

PYTHON = ["python3", "-u", "-c"]  # unbuffered: stdout and stderr lines stay in order


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture(scope="module")
def image(settings) -> str:
    return settings.processor_image


def gone(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.containers.get(container_id)
    except NotFound:
        return True
    return False


def test_checksum_runs_in_the_container(client, image) -> None:
    data = os.urandom(3 * 1024 * 1024)
    run = sandbox.run(
        client,
        sandbox.ContainerSpec(
            image,
            ["file.checksum", "/work/in/blob.bin", "/work/out"],
            environment={"DOCKYARD_PARAMS": json.dumps({"algorithms": ["sha256", "md5"]})},
            labels={sandbox.LABEL_JOB: "test"},
        ),
        {"blob.bin": data},
    )
    assert run.exit_code == 0, run.logs
    result = json.loads(run.outputs["result.json"])
    assert result["details"]["checksums"] == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
    }
    assert "DOCKYARD-PROGRESS" in run.logs


def test_container_is_locked_down_and_removed(client, image) -> None:
    seen = {}

    def inspect(container) -> None:
        container.reload()
        seen.update(
            id=container.id, host=container.attrs["HostConfig"], config=container.attrs["Config"]
        )

    limits = sandbox.Limits(memory_bytes=128 * 1024 * 1024, cpus=0.5, pids=32)
    probe = (
        "import os;print(sorted(os.listdir('/sys/class/net')));"
        "print(os.getuid());"
        "open('/tmp/scratch','w').write('ok');print('tmp writable');"
        "open('/etc/owned','w')"
    )
    run = sandbox.run(
        client,
        sandbox.ContainerSpec(
            image,
            [probe],
            entrypoint=[*PYTHON],
            labels={sandbox.LABEL_JOB: "j", sandbox.LABEL_ATTEMPT: "1"},
            limits=limits,
        ),
        {"x": b""},
        sandbox.Hooks(on_created=inspect),
    )
    host = seen["host"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == 128 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 32
    # Only an anonymous volume for /work: no path of the worker's host is mounted.
    assert all(":" not in bind for bind in host.get("Binds") or [])
    assert seen["config"]["User"] == "65534:65534"
    assert seen["config"]["Labels"][sandbox.LABEL_JOB] == "j"
    lines = run.logs.splitlines()
    assert "['lo']" in lines  # no network interface but loopback
    assert "65534" in lines
    assert "tmp writable" in run.logs
    assert "Read-only file system" in run.logs and run.exit_code != 0
    assert gone(client, seen["id"])


def test_timeout_kills_the_container(client, image) -> None:
    seen = {}
    started = time.monotonic()
    with pytest.raises(PermanentJobError) as caught:
        sandbox.run(
            client,
            sandbox.ContainerSpec(
                image,
                ["import time; time.sleep(60)"],
                entrypoint=[*PYTHON],
                limits=sandbox.Limits(timeout_seconds=1.5),
            ),
            {"x": b""},
            sandbox.Hooks(on_created=lambda c: seen.update(id=c.id)),
        )
    assert caught.value.code == "timeout"
    assert time.monotonic() - started < 10
    assert gone(client, seen["id"])


def test_cancel_kills_the_container_within_two_seconds(client, image) -> None:
    seen: dict = {}

    def created(container) -> None:  # noqa: ANN001
        # The cancel comes once the container exists: the clock must not include its start.
        seen.update(id=container.id, flag_at=time.monotonic() + 1.0)

    with pytest.raises(sandbox.Cancelled):
        sandbox.run(
            client,
            sandbox.ContainerSpec(image, ["import time; time.sleep(60)"], entrypoint=[*PYTHON]),
            {"x": b""},
            sandbox.Hooks(
                cancelled=lambda: "flag_at" in seen and time.monotonic() > seen["flag_at"],
                on_created=created,
            ),
        )
    assert time.monotonic() - seen["flag_at"] < 2.0  # killed and removed
    assert gone(client, seen["id"])


def test_output_over_the_limit_fails_permanently(client, image) -> None:
    with pytest.raises(PermanentJobError) as caught:
        sandbox.run(
            client,
            sandbox.ContainerSpec(
                image,
                ["archive.compress", "/work/in/r.bin", "/work/out"],
                environment={"DOCKYARD_PARAMS": json.dumps({"format": "gzip"})},
                limits=sandbox.Limits(max_output_bytes=1024 * 1024),
            ),
            {"r.bin": os.urandom(2 * 1024 * 1024)},
        )
    assert caught.value.code == "output_too_large"


def test_unreachable_engine_is_retryable(image) -> None:
    client = docker.DockerClient(
        base_url="unix:///nonexistent/docker.sock", version="1.41", timeout=2
    )
    with pytest.raises(RetryableJobError) as caught:
        sandbox.run(client, sandbox.ContainerSpec(image, ["file.checksum"]), {"x": b""})
    assert caught.value.code == "docker_unavailable"


def test_a_container_that_tries_the_network_fails(client, image) -> None:
    probe = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('1.1.1.1', 53), timeout=3)\n"
        "    print('CONNECTED')\n"
        "except OSError as error:\n"
        "    print('refused:', error)\n"
        "    raise SystemExit(3)\n"
    )
    run = sandbox.run(
        client, sandbox.ContainerSpec(image, [probe], entrypoint=[*PYTHON]), {"x": b""}
    )
    assert run.exit_code == 3
    assert "CONNECTED" not in run.logs and "refused:" in run.logs


def test_progress_lines_and_logs_reach_the_callbacks(client, image) -> None:
    seen: list[tuple[int, int, str]] = []
    kept: list[tuple[str, bool]] = []
    script = (
        "import time\n"
        "for i in range(1, 4):\n"
        "    print(f'DOCKYARD-PROGRESS {i} 3 step {i}', flush=True)\n"
        "    time.sleep(0.4)\n"
        "print('bye')\n"
    )
    sandbox.run(
        client,
        sandbox.ContainerSpec(image, [script], entrypoint=[*PYTHON]),
        {"x": b""},
        sandbox.Hooks(
            on_progress=lambda current, total, message: seen.append((current, total, message)),
            on_logs=lambda text, truncated: kept.append((text, truncated)),
        ),
    )
    assert seen[-1] == (3, 3, "step 3")
    assert [step[0] for step in seen] == sorted(step[0] for step in seen)
    assert kept and "bye" in kept[0][0] and kept[0][1] is False
