"""The reverse proxy: one app deployed through the API and a deploy worker, served by a Caddy
the bench starts (configured by the worker through its admin API, as `make run` does).

1. Latency and throughput at 50 connections (wrk), straight to the app's leased port vs
   through the proxy with the app's hostname (`Host: <app>.localhost:<port>`), alternating
   rounds, medians. Target: proxy p50 <= 1.2x direct.
2. A redeploy (a new commit) of the same app under a steady 50 requests a second through the
   proxy (open loop, bench/steady.py), through the switch and the old release's retirement:
   every non-200 and every connection error counts. Target: zero.

The app is the deploy tests' fixture (tests/fixtures/deploy/webapp: Python's threaded
http.server), cloned from a local stand-in for GitHub as in the deploy bench. That server
speaks HTTP/1.0 (a new connection for every request, on both paths: Caddy cannot keep its
upstream connections alive) with a listen backlog of 5, which overflows at 50 connections:
the p90 and p99 of both sides are mostly its dropped SYNs resent after 1 and 3 s, so the
comparison is on the p50.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

from bench import procs, wrk
from bench.client import API, ApiClient
from bench.core import Comparison, Context, env_int
from bench.cpu import CpuMeter, describe, per_unit_ms
from bench.env import LOG_DIR
from bench.steady import SteadyClient

NAME = "proxy"
PORT = 8107
HOST_PORTS = (22200, 22219)
REPO = "bench-proxy-app"  # its own repository, so only its images are removed at the end
APP = "bench-proxy"
RATE = 50.0
WARMUP_S = 2
LATENCY_TARGET = 1.2
# At a fixed number of connections throughput is about connections / latency (Little's
# law), so the latency target read as throughput is 1 / 1.2.
THROUGHPUT_TARGET = 0.8
REPLACE_GRACE_S = 2  # the old release serves in-flight requests this long after the switch
QUIET_S = 2.0  # steady traffic before the deploy and after the retirement


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def caddy(workdir: Path) -> Iterator[tuple[int, str, int]]:
    """Debian's Caddy on two free loopback ports, started with the configuration `make run`
    starts it with (no apps: the catch-all 404); yields (http port, admin URL, pid)."""
    from shared.config import Settings
    from workers.deploy.proxy import caddy_config

    binary = shutil.which("caddy")
    if binary is None:
        raise RuntimeError("caddy is not installed (scripts/setup.sh installs Debian's caddy)")
    http_port, admin_url = _free_port(), f"http://127.0.0.1:{_free_port()}"
    settings = replace(
        Settings(),
        proxy_port=http_port,
        proxy_admin_url=admin_url,
        deploy_domain="localhost",
        proxy_https=False,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "caddy.json"
    config.write_text(json.dumps(caddy_config([], settings)))
    home = workdir / "caddy-home"  # autosave and certificates: never the user's
    args = ["env", f"XDG_CONFIG_HOME={home}", f"XDG_DATA_HOME={home}", binary, "run"]
    with procs.service(
        "proxy-caddy", [*args, "--config", str(config)], procs.http_ok(f"{admin_url}/config/")
    ) as service:
        yield http_port, admin_url, service.pid


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set variables for the servers and workers started inside the block (and the API's
    checks in them); restored after, so later benches see the environment they expect."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def deploy(client: ApiClient, url: str, deployments: list[str]) -> dict[str, Any]:
    """A release of APP from `url`'s default branch; returns the deployment once healthy.
    Its id goes into `deployments` as soon as it exists, for the clean-up."""
    job = client._call(
        "POST",
        f"{API}/jobs/deploy",
        202,
        json={"repo_url": url, "app": APP, "health_path": "/health"},
    )
    deployments.append(job["params"]["deployment_id"])
    return wait_deployment(client, deployments[-1], "healthy", timeout=300)


def wait_deployment(
    client: ApiClient, deployment_id: str, status: str, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = client._call("GET", f"{API}/deployments/{deployment_id}", 200)
        if state["status"] == status:
            return state
        if state["status"] == "failed":
            raise RuntimeError(f"deploy failed: {state['error']}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"deployment {deployment_id} not {status} after {timeout:.0f}s")
        time.sleep(0.05)


def get_script(name: str, host: str | None) -> Path:
    """A wrk script sending plain GETs, with `host` as the Host header if given."""
    path = LOG_DIR / f"{name}.lua"
    path.write_text(f"wrk.headers[{json.dumps('Host')}] = {json.dumps(host)}\n" if host else "\n")
    return path


def latency(
    direct_url: str, proxy_url: str, host: str, rounds: int, seconds: int, meter: CpuMeter
) -> list[Comparison]:
    sides = {
        "direct": (direct_url, get_script("proxy-direct", None)),
        "proxy": (proxy_url, get_script("proxy-routed", host)),
    }
    for side, (url, script) in sides.items():
        wrk.run(url, script, f"proxy-{side}-warmup", duration_s=WARMUP_S)
    runs: dict[str, list[wrk.WrkResult]] = {side: [] for side in sides}
    cpu: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for index in range(rounds):
        for side, (url, script) in sides.items():
            meter.start()
            result = wrk.run(url, script, f"proxy-{side}-{index + 1}", duration_s=seconds)
            spent = meter.stop()
            runs[side].append(result)
            cpu[side].append(per_unit_ms(spent, max(result.requests, 1)))
            print(f"[proxy]   round {index + 1} {side}: {result.summary()}", flush=True)
            print(f"[proxy]     {describe(spent, max(result.requests, 1), 'request')}")
    p50 = {side: statistics.median(r.p50_ms for r in runs[side]) for side in sides}
    rps = {side: statistics.median(r.ok_per_s for r in runs[side]) for side in sides}
    details = {
        side: {"runs": [r.as_json() for r in runs[side]], "cpu_ms_per_request": cpu[side]}
        for side in sides
    }
    shape = f"{wrk.CONNECTIONS} connections, {rounds}x{seconds} s"
    return [
        Comparison(
            bench=NAME,
            measure=f"app p50 latency through the proxy, {shape}",
            unit="ms",
            baseline_name="straight to the app's port",
            baseline=p50["direct"],
            platform=p50["proxy"],
            target_op="<=",
            target=LATENCY_TARGET,
            details=details,
        ),
        Comparison(
            bench=NAME,
            measure=f"app throughput through the proxy, {shape}",
            unit="req/s",
            baseline_name="straight to the app's port",
            baseline=rps["direct"],
            platform=rps["proxy"],
            target_op=">=",
            target=THROUGHPUT_TARGET,
        ),
    ]


def redeploy(
    client: ApiClient,
    github: Any,
    deployments: list[str],
    proxy_url: str,
    host: str,
    old: dict[str, Any],
) -> Comparison:
    """A new release (a new commit) under RATE requests a second through the proxy, through
    the switch and the old release's retirement."""
    github.publish(REPO, fixture="webapp", extra={"VERSION": "2"})
    with SteadyClient(proxy_url, {"Host": host}, RATE) as load:
        time.sleep(QUIET_S)
        submitted = load.now()
        deploy(client, github.url(REPO), deployments)
        healthy = load.now()
        wait_deployment(client, old["id"], "stopped", timeout=60)
        retired = load.now()
        time.sleep(QUIET_S)
    outcomes = load.snapshot()
    errors = [o for o in outcomes if o.status != 200]
    answers = [o.body for o in outcomes if o.status == 200]
    changes = sum(1 for a, b in zip(answers, answers[1:], strict=False) if a != b)
    new_due = [o.due for o in outcomes if o.status == 200 and "version 2" in o.body]
    old_due = [o.due for o in outcomes if o.status == 200 and "version 1" in o.body]
    latencies = sorted(o.latency_s * 1000 for o in outcomes)
    span = outcomes[-1].due - outcomes[0].due if len(outcomes) > 1 else 0.0

    def rel(value: float | None) -> float | None:
        return None if value is None else round(value - submitted, 3)

    details = {
        "requests": len(outcomes),
        "rate_sent": round(len(outcomes) / span, 1) if span else 0.0,
        "errors": len(errors),
        "error_samples": [f"{o.due:.2f}s {o.status} {o.body}" for o in errors[:10]],
        "content_changes_in_send_order": changes,
        "deploy_seconds_to_healthy": round(healthy - submitted, 3),
        "retired_after_submit_s": rel(retired),
        "first_new_content_after_submit_s": rel(min(new_due, default=None)),
        "last_old_content_after_submit_s": rel(max(old_due, default=None)),
        "latency_p50_ms": round(latencies[len(latencies) // 2], 1) if latencies else None,
        "latency_max_ms": round(latencies[-1], 1) if latencies else None,
    }
    print(f"[proxy]   redeploy: {details}", flush=True)
    return Comparison(
        bench=NAME,
        measure=f"failed requests, redeploy under {RATE:.0f} req/s through the proxy",
        unit="requests",
        baseline_name="requests sent",
        baseline=float(len(outcomes)),
        platform=float(len(errors)),
        target_op="<=",
        target=0.0,
        details=details,
    )


def run(ctx: Context) -> list[Comparison]:
    from tests.integration.git_repos import FakeGitHub

    rounds = env_int("BENCH_PROXY_ROUNDS", 3)
    seconds = env_int("BENCH_PROXY_SECONDS", 5)
    workdir = Path(tempfile.mkdtemp(prefix="proxy-", dir=LOG_DIR))
    github = FakeGitHub(workdir / "github")
    github.publish(REPO, fixture="webapp", extra={"VERSION": "1"})
    repo_url = github.url(REPO)
    deployments: list[str] = []
    results: list[Comparison] = []
    try:
        with ExitStack() as stack:
            http_port, admin_url, caddy_pid = stack.enter_context(caddy(workdir / "caddy"))
            stack.enter_context(
                environment(
                    GIT_CONFIG_GLOBAL=str(github.gitconfig),
                    DEPLOY_GIT_PROTOCOLS="https,file",
                    DEPLOY_PORT_RANGE=f"{HOST_PORTS[0]}-{HOST_PORTS[1]}",
                    DEPLOY_REPLACE_GRACE=str(REPLACE_GRACE_S),
                    QUOTA_ACTIVE_DEPLOYMENTS="0",
                    DEPLOY_DOMAIN="localhost",
                    PROXY_PORT=str(http_port),
                    PROXY_ADMIN_URL=admin_url,
                )
            )
            api = stack.enter_context(procs.gunicorn("proxy-api", "api.wsgi:app", PORT))
            worker = stack.enter_context(
                procs.celery_worker("proxy-worker", "shared.celery_app", "deploy", "bench-proxy")
            )
            client = ApiClient.new_user(f"http://127.0.0.1:{PORT}")
            stack.callback(client.close)
            stack.callback(retire_app, client, deployments)

            print("[proxy] deploying v1 (builds the image)", flush=True)
            first = deploy(client, repo_url, deployments)
            host = f"{APP}.localhost:{http_port}"
            proxy_url = f"http://127.0.0.1:{http_port}/"
            direct_url = f"http://127.0.0.1:{first['port']}/"
            if first["url"] != f"http://{host}/":
                raise RuntimeError(f"unexpected app URL {first['url']!r}, expected {host}")
            procs.wait_until(lambda: _answers(proxy_url, host), 10, "the proxy to route the app")
            meter = CpuMeter({"caddy": caddy_pid, "proxy-api": api.pid, "proxy-worker": worker.pid})
            print(
                f"[proxy] wrk -t{wrk.THREADS} -c{wrk.CONNECTIONS} -d{seconds}s, {rounds} "
                f"alternating round(s): {direct_url} vs {proxy_url} (Host: {host})",
                flush=True,
            )
            results += latency(direct_url, proxy_url, host, rounds, seconds, meter)
            print(f"[proxy] redeploy (v2) under {RATE:.0f} req/s through the proxy", flush=True)
            results.append(redeploy(client, github, deployments, proxy_url, host, first))
    finally:
        remove_leftovers(deployments)
    return results


def _answers(url: str, host: str) -> bool:
    try:
        return requests.get(url, headers={"Host": host}, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def retire_app(client: ApiClient, deployments: list[str]) -> None:
    """DELETE the app (its releases stopped, route and ports released) while the worker
    still runs, and wait for its deployments to stop."""
    try:
        client._call("DELETE", f"{API}/apps/{APP}", 202)
        for deployment_id in deployments:
            wait_deployment(client, deployment_id, "stopped", timeout=60)
    except Exception as error:  # the leftovers are removed by hand below
        print(f"[proxy] could not delete the app cleanly: {error}", flush=True)


def remove_leftovers(deployments: list[str]) -> None:
    """Containers of the bench's deployments still there (an interrupted run), then the
    images built from its own repository only (other runs' images are left alone)."""
    for deployment_id in deployments:
        subprocess.run(
            ["docker", "rm", "-f", f"dockyard-deploy-{uuid.UUID(deployment_id)}"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    listed = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.split()
    mine = [tag for tag in listed if tag.startswith(f"dockyard-deploy/dockyard-tests-{REPO}:")]
    if mine:
        with suppress(subprocess.SubprocessError):
            subprocess.run(["docker", "rmi", *mine], capture_output=True, timeout=120, check=False)
