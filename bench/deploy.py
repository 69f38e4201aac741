"""Deploy: submit to `healthy` for the small fixture app (image cached) vs the same steps
done by hand in one script: git clone, docker build, docker run, poll until it answers.

Both clone the same "GitHub" repository (a local bare repository through git's insteadOf,
as in the tests), build the same Dockerfile (cached layers on both sides after a warm-up),
publish on a free localhost port and poll the same health path. Rounds alternate; the
median of each side is compared.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import requests

from bench import procs
from bench.client import API, ApiClient
from bench.core import Comparison, Context, env_int
from bench.env import LOG_DIR

NAME = "deploy"
PORT = 8103
HOST_PORTS = (22000, 22099)
MANUAL_PORT = 22100
POLL_S = 0.05


def _healthy(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def manual(url: str, tag: str) -> float:
    """The script a person would write; returns seconds from start to a 200."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-clone-") as scratch:
        subprocess.run(
            ["git", "clone", "-q", "--depth", "1", url, scratch + "/src"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            ["docker", "build", "-q", "-t", tag, scratch + "/src"],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    container = subprocess.run(
        ["docker", "run", "-d", "-p", f"127.0.0.1:{MANUAL_PORT}:8080", tag],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    try:
        while not _healthy(f"http://127.0.0.1:{MANUAL_PORT}/health"):
            time.sleep(POLL_S)
        return time.perf_counter() - started
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=60)


def platform(client: ApiClient, url: str) -> float:
    started = time.perf_counter()
    job = client._call(
        "POST", f"{API}/jobs/deploy", 202, json={"repo_url": url, "health_path": "/health"}
    )
    deployment_id = job["params"]["deployment_id"]
    while True:
        state = client._call("GET", f"{API}/deployments/{deployment_id}", 200)
        if state["status"] == "healthy":
            elapsed = time.perf_counter() - started
            break
        if state["status"] == "failed":
            raise RuntimeError(f"deploy failed: {state['error']}")
        time.sleep(POLL_S)
    client._call("POST", f"{API}/deployments/{deployment_id}/stop", 202)
    while client._call("GET", f"{API}/deployments/{deployment_id}", 200)["status"] != "stopped":
        time.sleep(0.2)
    return elapsed


def run(ctx: Context) -> list[Comparison]:
    from tests.integration.git_repos import FakeGitHub

    rounds = env_int("BENCH_DEPLOY_ROUNDS", 3)
    github = FakeGitHub(Path(tempfile.mkdtemp(prefix="github-", dir=LOG_DIR)))
    github.publish("webapp")
    url = github.url("webapp")
    os.environ.update(
        GIT_CONFIG_GLOBAL=str(github.gitconfig),
        DEPLOY_GIT_PROTOCOLS="https,file",
        DEPLOY_PORT_RANGE=f"{HOST_PORTS[0]}-{HOST_PORTS[1]}",
        QUOTA_ACTIVE_DEPLOYMENTS="0",
    )
    base = f"http://127.0.0.1:{PORT}"
    ours: list[float] = []
    theirs: list[float] = []
    with ExitStack() as stack:
        stack.enter_context(procs.gunicorn("deploy-api", "api.wsgi:app", PORT))
        stack.enter_context(
            procs.celery_worker("deploy-worker", "shared.celery_app", "deploy", "bench-deploy")
        )
        client = ApiClient.new_user(base)
        stack.callback(client.close)
        print("[deploy] warm-up: one deploy each way (builds the image once)", flush=True)
        platform(client, url)
        manual(url, "dockyard-bench/manual:latest")
        for index in range(rounds):
            theirs.append(manual(url, "dockyard-bench/manual:latest"))
            ours.append(platform(client, url))
            print(
                f"[deploy]   round {index + 1}: script {theirs[-1]:.2f}s, platform {ours[-1]:.2f}s",
                flush=True,
            )
    subprocess.run(["docker", "rmi", "dockyard-bench/manual:latest"], capture_output=True)
    github.remove_images()
    return [
        Comparison(
            bench=NAME,
            measure=f"deploy to healthy, median of {rounds}",
            unit="s",
            baseline_name="clone+build+run script",
            baseline=statistics.median(theirs),
            platform=statistics.median(ours),
            target_op="<=",
            target=1.2,
            details={"script_seconds": theirs, "platform_seconds": ours},
        )
    ]
