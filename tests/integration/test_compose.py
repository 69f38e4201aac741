"""The compose stack, as ops run it: every image built here from locally made bases (no
registry), the whole stack up with docker-compose, `worker-files` scaled to 3, a file job
submitted through the API that succeeds and downloads from the S3 service, Flower's API
showing the 3 file workers, the whole run's platform logs scanned (JSON lines that follow the
job across api and worker by request_id and job_id; no secret in them), and everything torn
down (volumes included)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "dockyard-smoke"
PORTS = {"API_PORT": "18000", "MINIO_PORT": "19000", "FLOWER_PORT": "15555"}
API = f"http://127.0.0.1:{PORTS['API_PORT']}/api/v1"
# Secrets of this run only, so finding one in the logs means the platform logged it.
SECRETS = {
    "JWT_SECRET_KEY": f"jwt-{secrets.token_hex(24)}",
    "POSTGRES_PASSWORD": f"pg-{secrets.token_hex(12)}",
    "MINIO_ROOT_PASSWORD": f"s3-{secrets.token_hex(12)}",
}
PLATFORM_SERVICES = (
    "migrate", "api", "worker-files", "worker-deploy", "worker-dead-letter", "beat", "flower",
)  # fmt: skip

pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="no Docker engine")


def compose(*args: str, timeout: float = 900) -> str:
    env = {
        **os.environ,
        **PORTS,
        "COMPOSE_PROJECT_NAME": PROJECT,
        "S3_PUBLIC_ENDPOINT_URL": f"http://127.0.0.1:{PORTS['MINIO_PORT']}",
        "FLOWER_BASIC_AUTH": "ops:smoke-test",
        **SECRETS,
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
    submitted = requests.post(
        f"{API}/jobs/files",
        headers=headers,
        data={"processor": "file.checksum", "params": '{"algorithms": ["sha256"]}'},
        files={"file": ("hello.txt", data)},
        timeout=30,
    )
    job, request_id = submitted.json(), submitted.headers["X-Request-ID"]
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
    _latency_counts_merge_every_gunicorn_worker(job["id"], headers)
    _scan_logs(
        job["id"],
        request_id,
        [credentials["password"], token["access_token"], token["refresh_token"]],
    )


def _latency_counts_merge_every_gunicorn_worker(job_id: str, headers: dict) -> None:
    """The API runs 2 gunicorn workers; each scrape must count the requests both served."""

    def served() -> float:
        text = requests.get(f"http://127.0.0.1:{PORTS['API_PORT']}/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "dockyard_http_request_duration_seconds_count"
            and sample.labels.get("route") == "/api/v1/jobs/<uuid:job_id>"
            and sample.labels.get("method") == "GET"
        )

    before = served()
    for _ in range(20):
        assert requests.get(f"{API}/jobs/{job_id}", headers=headers, timeout=10).ok
    assert [served() - before for _ in range(3)] == [20, 20, 20]


def _scan_logs(job_id: str, request_id: str, user_secrets: list[str]) -> None:
    """Every platform service's output from this run: no secret in it, and the job's JSON
    lines from the API and a file worker share its request_id."""
    logs = compose("logs", "--no-color", *PLATFORM_SERVICES)
    for secret in [*SECRETS.values(), *user_secrets]:
        assert len(secret) >= 8 and secret not in logs
    entries = []
    for line in logs.splitlines():
        text = line.partition("|")[2].strip()
        if text.startswith("{"):
            entries.append(json.loads(text))  # a line that looks like JSON must be JSON
    assert entries and all({"timestamp", "level", "service", "event"} <= set(e) for e in entries)
    mine = [e for e in entries if e.get("job_id") == job_id]
    assert {"api", "worker-files"} <= {e["service"] for e in mine}
    assert {e.get("request_id") for e in mine} == {request_id}


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
