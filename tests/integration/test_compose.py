"""The compose stack, as ops run it: every image built here from locally made bases (no
registry), the whole stack up with docker-compose, `worker-files` scaled to 3, a file job
submitted through the API that succeeds and downloads from the S3 service, Flower's API
showing the 3 file workers, and everything torn down (volumes included)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "dockyard-smoke"
PORTS = {"API_PORT": "18000", "MINIO_PORT": "19000", "FLOWER_PORT": "15555"}
API = f"http://127.0.0.1:{PORTS['API_PORT']}/api/v1"

pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="no Docker engine")


def compose(*args: str, timeout: float = 900) -> str:
    env = {
        **os.environ,
        **PORTS,
        "COMPOSE_PROJECT_NAME": PROJECT,
        "S3_PUBLIC_ENDPOINT_URL": f"http://127.0.0.1:{PORTS['MINIO_PORT']}",
        "FLOWER_BASIC_AUTH": "ops:smoke-test",
    }
    done = subprocess.run(
        [str(ROOT / "scripts" / "compose.sh"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def stack():
    compose("down", "-v", "--remove-orphans")
    try:
        compose("up", "-d")
        yield
    finally:
        compose("down", "-v", "--remove-orphans")


def test_compose_stack_runs_scales_and_serves_a_file_job(stack) -> None:
    compose("up", "-d", "--scale", "worker-files=3")
    wait_for(
        lambda: _ok(f"http://127.0.0.1:{PORTS['API_PORT']}/readyz"),
        timeout=120,
        message="the API",
    )
    credentials = {"email": "ops@example.com", "password": "smoke test password"}
    assert requests.post(f"{API}/auth/register", json=credentials, timeout=10).status_code == 201
    token = requests.post(f"{API}/auth/login", json=credentials, timeout=10).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    data = b"hello from the compose stack\n"
    job = requests.post(
        f"{API}/jobs/files",
        headers=headers,
        data={"processor": "file.checksum", "params": '{"algorithms": ["sha256"]}'},
        files={"file": ("hello.txt", data)},
        timeout=30,
    ).json()
    done = wait_for(
        lambda: (
            (j := requests.get(f"{API}/jobs/{job['id']}", headers=headers, timeout=10).json())[
                "status"
            ]
            in ("succeeded", "failed", "dead")
            and j
        ),
        timeout=120,
        message="the file job",
    )
    assert done["status"] == "succeeded", done["error"]
    link = requests.get(f"{API}/jobs/{job['id']}/download", headers=headers, timeout=10).json()
    result = requests.get(link["url"], timeout=10)
    assert result.json() == {"sha256": hashlib.sha256(data).hexdigest()}
    workers = wait_for(_three_file_workers, timeout=120, message="3 file workers in Flower")
    assert len(set(workers)) == 3  # unique node names
    flower_metrics = requests.get(
        f"http://127.0.0.1:{PORTS['FLOWER_PORT']}/metrics", auth=("ops", "smoke-test"), timeout=10
    )
    assert flower_metrics.status_code == 200 and "flower_" in flower_metrics.text
    ended = 'dockyard_jobs_ended_total{kind="file",processor="file.checksum",status="succeeded"}'
    wait_for(  # the worker counts the end after deleting the input, just after its commit
        lambda: (
            ended in requests.get(f"http://127.0.0.1:{PORTS['API_PORT']}/metrics", timeout=10).text
        ),
        message="the job's end in the API's metrics",
    )
    assert (
        requests.get(f"http://127.0.0.1:{PORTS['FLOWER_PORT']}/api/workers", timeout=5).status_code
        == 401
    )


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _three_file_workers() -> list[str] | None:
    files = [name for name in _flower_workers() if name.startswith("files@")]
    return files if len(files) == 3 else None


def _flower_workers() -> list[str]:
    try:
        response = requests.get(
            f"http://127.0.0.1:{PORTS['FLOWER_PORT']}/api/workers?refresh=1",
            auth=("ops", "smoke-test"),
            timeout=10,
        )
        return sorted(response.json()) if response.status_code == 200 else []
    except (requests.RequestException, ValueError):
        return []
