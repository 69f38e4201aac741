"""Schemathesis against the live API, from the API's own /api/v1/openapi.json.

A real gunicorn (with `api/gunicorn_conf.py`, as in production) serves `create_app` over
HTTP. The fuzzer runs every phase (examples, coverage, fuzzing, and stateful sequences that
follow the document's OpenAPI links, so ids come from real responses) with a fixed seed and
a bounded number of examples, once with a user's token and once with an admin's, and checks
that no answer is a 5xx and that every status code, content type and body is the one the
document declares. Zero failures pass.

Isolation, so the fuzzer's work cannot touch the rest of the suite or the machine: the
server has a database of its own (created and dropped here), a private Redis (broker,
blocklist, quotas) that no worker consumes, so every job it submits stays queued and none
runs, and a local storage directory. The streaming endpoints are left out: an SSE stream
stays open for as long as its token lives, which a request-per-example fuzzer reads as a
timeout; tests/integration/test_streams.py covers them. Refresh is fuzzed again with a
refresh token, and logout last, on its own, because it revokes the token the rest of the run
uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shared.config import Settings
from tests.helpers import PASSWORD, free_port, wait_for
from tests.integration.stack import scratch_database

BIN = Path(sys.executable).parent
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "response_schema_conformance",
        "content_type_conformance",
    )
)
SEED = 20261126
MAX_EXAMPLES = 40
STATELESS = "examples,coverage,fuzzing"
ALL_PHASES = STATELESS + ",stateful"
STREAMS = "^/api/v1/(jobs/(stream|[^/]+/stream)|deployments/[^/]+/logs/stream)$"
LOGOUT = "/api/v1/auth/logout"
REFRESH = "/api/v1/auth/refresh"
CONFIG = """
[phases.stateful]
max-steps = 8
"""


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of the fuzz server's own: its broker has no consumer, so nothing runs."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("fuzz-redis")
    process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port)]
        + ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    try:
        wait_for(lambda: _redis_answers(url), timeout=20, message="the private redis")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _redis_answers(url: str) -> bool:
    from redis import Redis

    try:
        return bool(Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


@pytest.fixture(scope="module")
def fuzz_database(settings: Settings) -> Iterator[str]:
    """A database of the fuzz server's own, so bulk admin operations cannot reach rows
    that other tests made."""
    with scratch_database(settings.database_url, "fuzz") as url:
        yield url


@pytest.fixture(scope="module")
def live_api(
    fuzz_database: str, private_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """gunicorn serving the API over HTTP, as the compose stack and k8s run it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    workdir = tmp_path_factory.mktemp("fuzz-api")
    env = {
        **os.environ,
        "DATABASE_URL": fuzz_database,
        "CELERY_BROKER_URL": f"{private_redis}/0",
        "REDIS_URL": f"{private_redis}/1",
        "STORAGE_BACKEND": "local",
        "STORAGE_LOCAL_ROOT": str(workdir / "storage"),
        "PUBLIC_BASE_URL": base,
        # Quotas on (their 429s are part of the contract) but high enough not to starve
        # the stateful phase of new jobs.
        "QUOTA_SUBMITS_PER_MINUTE": "1000",
        "QUOTA_ACTIVE_JOBS": "500",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("CELERY_RESULT_BACKEND", None)
    log = (workdir / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "python:api.gunicorn_conf", "--bind", f"127.0.0.1:{port}"]
        + ["--workers", "2", "--threads", "4", "--timeout", "60", "api.wsgi:app"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _answers(base + "/healthz"), timeout=60, message="the live API")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except (requests.ConnectionError, requests.Timeout):  # a slow first answer: not up yet
        return False


def account(base: str, database_url: str, admin: bool = False, kind: str = "access") -> str:
    """Register over HTTP (promote with the CLI's helper) and log in: the access token (or
    the refresh token)."""
    from api.cli import ensure_admin

    email = f"fuzz-{uuid.uuid4().hex[:10]}@example.com"
    credentials = {"email": email, "password": PASSWORD}
    assert requests.post(base + "/api/v1/auth/register", json=credentials, timeout=30).ok
    if admin:
        ensure_admin(email, None, database_url)
    response = requests.post(base + "/api/v1/auth/login", json=credentials, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()[f"{kind}_token"]


def schemathesis(base: str, token: str, tmp_path: Path, phases: str, *selection: str) -> str:
    """One schemathesis run; fails the test with its report unless it found nothing."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(BIN / "schemathesis"),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{base}/api/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--phases",
        phases,
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-allow-x00",
        "true",
        "--generation-database",
        "none",
        # One worker: with two threads, CPython 3.11's ast.parse (Hypothesis describing a
        # filter lambda) sometimes fails with "AST constructor recursion depth mismatch".
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--suppress-health-check",
        "all",
        *selection,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=400, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    return result.stdout


def test_the_api_conforms_to_its_openapi_document(
    live_api: str, fuzz_database: str, tmp_path: Path
) -> None:
    everything_but_logout = ("--exclude-path-regex", STREAMS, "--exclude-path", LOGOUT)
    user = account(live_api, fuzz_database)
    report = schemathesis(live_api, user, tmp_path / "user", ALL_PHASES, *everything_but_logout)
    assert "API Links:" in report and " 0 covered" not in report  # links were followed
    admin = account(live_api, fuzz_database, admin=True)
    schemathesis(live_api, admin, tmp_path / "admin", ALL_PHASES, *everything_but_logout)
    # No links lead to these two: the stateful phase has nothing to run for them alone.
    # Refresh takes a refresh token (rotation spends it; a reuse then answers 401).
    refresh = account(live_api, fuzz_database, kind="refresh")
    schemathesis(live_api, refresh, tmp_path / "refresh", STATELESS, "--include-path", REFRESH)
    schemathesis(live_api, user, tmp_path / "logout", STATELESS, "--include-path", LOGOUT)


def test_the_document_declares_every_status_and_the_links(client) -> None:  # noqa: ANN001
    """What the fuzzer found undeclared before: 400 invalid_json, 415, 401 on login, 413 on
    bodies, 422 everywhere (NUL/UTF-8 in headers, path, query); and the links it follows."""
    spec = client.get("/api/v1/openapi.json").get_json()
    operations = {
        (method, path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }
    for (method, path), operation in operations.items():
        statuses = set(operation["responses"])
        assert "422" in statuses, (method, path)
        body = operation.get("requestBody", {}).get("content", {})
        if "application/json" in body:
            assert statuses >= {"400", "413", "415", "422", "503"}, (method, path)
        if "multipart/form-data" in body:
            assert statuses >= {"413", "415", "422"}, (method, path)
        if operation.get("security"):
            assert statuses >= {"401", "503"}, (method, path)
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}
    login = operations[("post", "/api/v1/auth/login")]["responses"]
    assert {"401", "429"} <= set(login)
    for path in ("/api/v1/auth/register", "/api/v1/auth/refresh", "/api/v1/jobs/{job_id}/retry"):
        assert "429" in operations[("post", path)]["responses"], path
    submit = operations[("post", "/api/v1/jobs")]["responses"]
    assert {"200", "202"} <= set(submit)
    links = submit["202"]["links"]
    assert links["GetJob"] == {
        "operationId": "v1_jobs_get_job",
        "parameters": {"job_id": "$response.body#/id"},
    }
    targets = {link["operationId"] for link in links.values()}
    assert targets >= {
        "v1_jobs_get_job",
        "v1_jobs_job_events",
        "v1_jobs_cancel",
        "v1_jobs_retry",
        "v1_file_jobs_job_logs",
        "v1_file_jobs_download",
    }
    deploy = operations[("post", "/api/v1/jobs/deploy")]["responses"]["202"]["links"]
    assert deploy["GetDeployment"]["parameters"] == {
        "deployment_id": "$response.body#/params/deployment_id"
    }
    dead_letters = operations[("get", "/api/v1/admin/dead-letters")]["responses"]["200"]
    assert {"RequeueFirst", "DeleteFirst"} <= set(dead_letters["links"])
    every_id = {link["operationId"] for op in operations.values() for link in _links(op)}
    assert every_id <= {op["operationId"] for op in operations.values()}


def _links(operation: dict) -> list[dict]:
    return [
        link
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    ]


def test_a_long_request_line_reaches_the_api(live_api: str) -> None:
    """gunicorn's default limit (4094 bytes) answered a plain-text 400 outside the API's
    error shape; api/gunicorn_conf.py raises it to 8190."""
    response = requests.get(f"{live_api}/api/v1/jobs?cursor={'a' * 7000}", timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_required"
