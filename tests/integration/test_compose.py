"""The compose stack, as ops run it, through the Makefile: every image built here from
locally made bases (no registry); `make up` creating the env file with random secrets (a
temporary one: a developer's .env is never touched) and running the stack in production
mode with them; only the API and the apps' proxy published (on 127.0.0.1; the proxy's
admin API reached by the deploy workers only), Flower published because the env file opts
in, S3 not; `make scale FILES=3 DEPLOY=2` seen by Flower; a file job through the
API that succeeds and downloads through the API (S3 is not reachable from the host); Redis
keeping queued messages across a container restart (append-only file) so every job runs
exactly once; Flower keeping its task history across a restart; the platform logs scanned
(JSON lines that follow the job across api and worker by request_id; no secret in them);
`make down`, then everything removed (volumes included).

The tests run in file order and share one stack (module fixture)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from shared.dispatch import priorities
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "dockyard-smoke"
API_PORT, FLOWER_PORT, PROXY_PORT = "18000", "15555", "18088"
BASE = f"http://127.0.0.1:{API_PORT}"
API = f"{BASE}/api/v1"
FLOWER = f"http://127.0.0.1:{FLOWER_PORT}"
# What the operator writes before the first `make up`; the secrets are left to make up.
OPERATOR_SETTINGS = {
    "DOCKYARD_ENV": "production",
    "API_PORT": API_PORT,
    "PUBLIC_BASE_URL": BASE,
    "FLOWER_BIND_ADDRESS": "127.0.0.1",
    "FLOWER_PORT": FLOWER_PORT,
    "PROXY_PORT": PROXY_PORT,
}
GENERATED = ("JWT_SECRET_KEY", "STORAGE_SIGNING_KEY", "DEPLOY_SECRETS_KEY", "POSTGRES_PASSWORD",
             "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "FLOWER_BASIC_AUTH")  # fmt: skip
PLATFORM_SERVICES = (
    "migrate", "api", "worker-files", "worker-deploy", "worker-dead-letter", "worker-webhooks",
    "beat", "flower",
)  # fmt: skip

pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="no Docker engine")


class Stack:
    """The smoke stack's env file and the commands ops type, in a clean environment (only
    PATH and HOME of the test's own: the env file is the whole configuration)."""

    def __init__(self, env_file: Path) -> None:
        self.env_file = env_file
        self.environ = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "ENV_FILE": str(env_file),
            "COMPOSE_PROJECT_NAME": PROJECT,
        }
        self.secrets: dict[str, str] = {}
        self.headers: dict[str, str] = {}

    def run(self, *command: str, timeout: float = 900) -> str:
        done = subprocess.run(
            command, cwd=ROOT, env=self.environ, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout + done.stderr

    def make(self, *targets: str) -> str:
        return self.run("make", "--no-print-directory", *targets)

    def compose(self, *args: str) -> str:
        return self.run(str(ROOT / "scripts" / "compose.sh"), *args)

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).split()
        assert len(ids) == 1, ids
        return ids[0]

    def flower_auth(self) -> tuple[str, str]:
        user, _, password = self.secrets["FLOWER_BASIC_AUTH"].partition(":")
        return user, password


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    env_file = tmp_path_factory.mktemp("compose") / "smoke.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in OPERATOR_SETTINGS.items()))
    stack = Stack(env_file)
    # What a run killed half-way left (with an env file of its own: `make up` must be the
    # first to see the stack's).
    Stack(env_file.with_name("cleanup.env")).compose("down", "-v", "--remove-orphans")
    try:
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans")


def test_make_up_writes_random_secrets_and_publishes_only_the_api(stack: Stack) -> None:
    jump = ["INPUT", "-i", "dy-+", "-j", "DOCKYARD-DEPLOY-IN"]
    while subprocess.run(["iptables", "-D", *jump], capture_output=True).returncode == 0:
        pass  # an earlier deploy test's worker may have applied it: prove make up does
    output = stack.make("up")
    # The deploy workers cannot set the host firewall from their containers; make up did.
    assert subprocess.run(["iptables", "-C", *jump], capture_output=True).returncode == 0
    assert "deploy firewall applied" in output
    assert f"random secrets written to {stack.env_file}" in output
    assert stat.S_IMODE(stack.env_file.stat().st_mode) == 0o600
    stack.secrets = _read_env(stack.env_file)
    for key, value in OPERATOR_SETTINGS.items():
        assert stack.secrets[key] == value  # what the operator wrote is kept
    for key in GENERATED:
        minimum = 20 if key == "MINIO_ROOT_USER" else 32
        assert len(stack.secrets[key].rpartition(":")[2]) >= minimum, key
    other = stack.env_file.with_name("other.env")
    stack.run(str(ROOT / "scripts" / "make_env.sh"), str(other))
    assert all(_read_env(other)[key] != stack.secrets[key] for key in GENERATED)
    wait_for(lambda: _ok(f"{BASE}/readyz"), timeout=180, message="the API")
    _production_refuses_a_shipped_secret(stack)
    published = _published_ports(stack)
    assert published == {
        "api": {f"127.0.0.1:{API_PORT}->8000/tcp"},
        "flower": {f"127.0.0.1:{FLOWER_PORT}->5555/tcp"},  # the env file opts in
        "proxy": {f"127.0.0.1:{PROXY_PORT}->{PROXY_PORT}/tcp"},  # the apps' URLs
    }, published
    _proxy_serves_apps_and_only_deploy_workers_reach_its_admin_api(stack)
    # Without the opt-in, compose publishes the API and the apps' proxy (S3 and Flower stay
    # internal).
    bare = stack.env_file.with_name("bare.env")
    bare.write_text(stack.env_file.read_text().replace("FLOWER_BIND_ADDRESS=127.0.0.1", ""))
    rendered = _render(stack, bare)
    published_services = [name for name, svc in rendered["services"].items() if svc.get("ports")]
    assert sorted(published_services) == ["api", "proxy"]
    assert _host_ips(rendered, "api") == _host_ips(rendered, "proxy") == ["127.0.0.1"]
    assert rendered["services"]["api"]["environment"]["S3_DOWNLOADS"] == "api"
    # S3_BIND_ADDRESS opts in: S3 published there, downloads become presigned S3 URLs.
    with_s3 = bare.with_name("s3.env")
    with_s3.write_text(bare.read_text() + "S3_BIND_ADDRESS=127.0.0.1\nMINIO_PORT=19000\n")
    rendered = _render(stack, with_s3)
    assert _host_ips(rendered, "minio") == ["127.0.0.1"]
    assert rendered["services"]["api"]["environment"]["S3_DOWNLOADS"] == "presigned"


def test_make_scale_sizes_the_file_and_deploy_fleets(stack: Stack) -> None:
    before = stack.env_file.read_text()
    stack.make("scale", "FILES=3", "DEPLOY=2")
    assert stack.env_file.read_text() == before  # secrets are generated once
    nodes = wait_for(lambda: _fleets(stack, files=3, deploy=2), timeout=120, message="fleets")
    assert len(set(nodes)) == 5  # unique node names, one per container


def test_a_file_job_succeeds_and_downloads_through_the_api(stack: Stack) -> None:
    credentials = {"email": "ops@example.com", "password": "smoke test password"}
    assert requests.post(f"{API}/auth/register", json=credentials, timeout=10).status_code == 201
    token = requests.post(f"{API}/auth/login", json=credentials, timeout=10).json()
    stack.headers = {"Authorization": f"Bearer {token['access_token']}"}
    data = b"hello from the compose stack\n"
    submitted = requests.post(
        f"{API}/jobs/files",
        headers=stack.headers,
        data={"processor": "file.checksum", "params": '{"algorithms": ["sha256"]}'},
        files={"file": ("hello.txt", data)},
        timeout=30,
    )
    job, request_id = submitted.json(), submitted.headers["X-Request-ID"]
    done = _wait_ended(stack, [job["id"]])[0]
    assert done["status"] == "succeeded", done["error"]
    link = requests.get(f"{API}/jobs/{job['id']}/download", headers=stack.headers, timeout=10)
    assert link.json()["url"].startswith(f"{API}/files/")  # S3 is not published
    result = requests.get(link.json()["url"], timeout=10)
    assert result.json() == {"sha256": hashlib.sha256(data).hexdigest()}
    stack.secrets["file_job"] = job["id"]
    flower_metrics = requests.get(f"{FLOWER}/metrics", auth=stack.flower_auth(), timeout=10)
    assert flower_metrics.status_code == 200 and "flower_" in flower_metrics.text
    assert requests.get(f"{FLOWER}/api/workers", timeout=5).status_code == 401
    ended = 'dockyard_jobs_ended_total{kind="file",processor="file.checksum",status="succeeded"}'
    wait_for(  # the worker counts the end after deleting the input, just after its commit
        lambda: ended in requests.get(f"{BASE}/metrics", timeout=10).text,
        message="the job's end in the API's metrics",
    )
    _latency_counts_merge_every_gunicorn_worker(job["id"], stack.headers)
    _scan_logs(
        stack,
        job["id"],
        request_id,
        [credentials["password"], token["access_token"], token["refresh_token"]],
    )


def test_redis_keeps_queued_messages_across_a_restart(stack: Stack) -> None:
    """With no file worker running, messages wait in Redis; `docker restart` of the redis
    container (append-only file on its volume) keeps them, and once the fleet is back every
    job runs exactly once: one attempt, no recovery `redispatched` event."""
    stack.make("scale", "FILES=0", "DEPLOY=2")
    wait_for(lambda: not stack.compose("ps", "-q", "worker-files").split(), message="no files")
    ids = [
        requests.post(
            f"{API}/jobs",
            headers=stack.headers,
            json={"processor": "debug.echo", "params": {"message": f"m{n}", "fleet": "files"}},
            timeout=10,
        ).json()["id"]
        for n in range(4)
    ]
    redis = stack.container("redis")
    wait_for(lambda: _queued(redis, ids) == set(ids), timeout=30, message="messages in Redis")
    stack.run("docker", "restart", redis)
    assert _queued(redis, ids) == set(ids)  # read from the append-only file at start
    wait_for(lambda: _ok(f"{BASE}/readyz"), timeout=60, message="the API after Redis")
    stack.make("scale", "FILES=3", "DEPLOY=2")
    for job in _wait_ended(stack, ids):
        assert (job["status"], job["attempts"]) == ("succeeded", 1), job
        events = requests.get(
            f"{API}/jobs/{job['id']}/events", headers=stack.headers, timeout=10
        ).json()["items"]
        types = [e["type"] for e in events]
        assert types.count("started") == 1 and "redispatched" not in types, types


def test_flower_keeps_its_task_history_across_a_restart(stack: Stack) -> None:
    before = wait_for(lambda: _flower_tasks(stack), timeout=60, message="tasks in Flower")
    assert any(t.get("name") == "dockyard.file.run" for t in before.values())
    stack.run("docker", "restart", stack.container("flower"))
    after = wait_for(lambda: _flower_tasks(stack), timeout=60, message="Flower after restart")
    assert set(before) <= set(after)


def test_make_down_stops_the_stack(stack: Stack) -> None:
    stack.make("down")
    assert not stack.compose("ps", "-q").split()
    assert not _ok(f"{BASE}/readyz")


def _production_refuses_a_shipped_secret(stack: Stack) -> None:
    """The stack runs in production mode with the generated secrets; the same image, given
    a secret the repository ships, refuses to start and names the variable."""
    api = stack.container("api")
    assert "DOCKYARD_ENV=production" in stack.run("docker", "exec", api, "env").splitlines()
    refused = subprocess.run(
        ["docker", "exec", "-e", "FLOWER_BASIC_AUTH=admin:dockyard", api,
         "python", "-c", "import shared.config as c; c.load_settings()"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "configuration error: FLOWER_BASIC_AUTH must not be a value the repository ships"
        )
    )


def _proxy_serves_apps_and_only_deploy_workers_reach_its_admin_api(stack: Stack) -> None:
    """The proxy answers an unknown app's hostname with its 404 page; its admin API is
    reached from a deploy worker (proxy-admin network) and from no other service."""
    status, text = wait_for(
        lambda: _get(f"http://127.0.0.1:{PROXY_PORT}/", {"Host": "nobody.localhost"}),
        timeout=60,
        message="the proxy",
    )
    assert status == 404 and "No app is served" in text
    probe = "import requests; print(requests.get('http://proxy:2019/config/', timeout=5).ok)"
    for service, reachable in (("worker-deploy", True), ("api", False)):
        done = subprocess.run(
            ["docker", "exec", stack.container(service), "python", "-c", probe],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (done.stdout.strip() == "True") is reachable, (service, done.stderr[-500:])


def _get(url: str, headers: dict[str, str]) -> tuple[int, str] | None:
    """(status, body), or None while nothing answers."""
    try:
        response = requests.get(url, headers=headers, timeout=2)
    except requests.RequestException:
        return None
    return response.status_code, response.text


def _render(stack: Stack, env_file: Path) -> dict:
    """The compose configuration compose.sh would run with this env file."""
    environ = {**stack.environ, "ENV_FILE": str(env_file)}
    done = subprocess.run(
        [str(ROOT / "scripts" / "compose.sh"), "config"],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return yaml.safe_load(done.stdout)


def _host_ips(rendered: dict, service: str) -> list[str]:
    """Host addresses a rendered service publishes on (compose v1 short form, v2 long)."""
    ports = rendered["services"][service].get("ports", [])
    return [p.get("host_ip", "") if isinstance(p, dict) else p.split(":")[0] for p in ports]


def _published_ports(stack: Stack) -> dict[str, set[str]]:
    """Host ports of every container of the project, by compose service."""
    out = stack.run(
        "docker", "ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
        "--format", '{{.Label "com.docker.compose.service"}}\t{{.Ports}}',
    )  # fmt: skip
    published: dict[str, set[str]] = {}
    for line in out.splitlines():
        service, _, ports = line.partition("\t")
        for port in filter(None, (p.strip() for p in ports.split(","))):
            if "->" in port:
                published.setdefault(service, set()).add(port)
    return published


def _fleets(stack: Stack, files: int, deploy: int) -> list[str] | None:
    """The online file and deploy nodes, once there are exactly that many of each."""
    names = [n for n in _flower_workers(stack) if n.split("@")[0] in ("files", "deploy")]
    counts = [sum(n.startswith(f"{fleet}@") for n in names) for fleet in ("files", "deploy")]
    return names if counts == [files, deploy] else None


def _flower_workers(stack: Stack) -> list[str]:
    try:
        response = requests.get(
            f"{FLOWER}/api/workers?refresh=1&status=true", auth=stack.flower_auth(), timeout=15
        )
        if response.status_code != 200:
            return []
        return sorted(name for name, online in response.json().items() if online)
    except (requests.RequestException, ValueError):
        return []


def _flower_tasks(stack: Stack) -> dict[str, dict]:
    try:
        response = requests.get(f"{FLOWER}/api/tasks", auth=stack.flower_auth(), timeout=10)
        return response.json() if response.status_code == 200 else {}
    except (requests.RequestException, ValueError):
        return {}


def _queued(redis_container: str, job_ids: list[str]) -> set[str]:
    """The job ids found in the messages waiting in the `files` queue."""
    done = subprocess.run(
        ["docker", "exec", redis_container, "redis-cli", "--raw", "lrange",
         priorities.list_name("files", "normal"), "0", "-1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return {job_id for job_id in job_ids if job_id in done.stdout}


def _wait_ended(stack: Stack, ids: list[str]) -> list[dict]:
    def ended() -> list[dict] | None:
        jobs = [
            requests.get(f"{API}/jobs/{i}", headers=stack.headers, timeout=10).json() for i in ids
        ]
        finished = all(j["status"] in ("succeeded", "failed", "dead") for j in jobs)
        return jobs if finished else None

    return wait_for(ended, timeout=120, interval=0.5, message=f"jobs {ids}")


def _latency_counts_merge_every_gunicorn_worker(job_id: str, headers: dict) -> None:
    """The API runs 2 gunicorn workers; each scrape must count the requests both served."""

    def served() -> float:
        text = requests.get(f"{BASE}/metrics", timeout=10).text
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


def _scan_logs(stack: Stack, job_id: str, request_id: str, user_secrets: list[str]) -> None:
    """Every platform service's output from this run: no secret in it (the generated ones,
    the user's), and the job's JSON lines from the API and a file worker share its
    request_id."""
    logs = stack.compose("logs", "--no-color", *PLATFORM_SERVICES)
    generated = [stack.secrets[k].rpartition(":")[2] for k in GENERATED if k != "MINIO_ROOT_USER"]
    for secret in [*generated, *user_secrets]:
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


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
