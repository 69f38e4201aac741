"""The submit path under 50 connections (wrk): a minimal INSERT+LPUSH endpoint vs POST /jobs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from statistics import median
from typing import Any

from bench import env
from bench.client import token
from bench.procs import LOG_DIR, gunicorn

MINIMAL_PORT = 8101
PLATFORM_PORT = 8100
WRK = ["wrk", "-t", "2", "-c", "50", "-d", "6s", "--latency", "--timeout", "10s"]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}wrk.body = '{{"processor": "debug.echo", "params": {{"message": "bench"}}}}'
"""


def _script(name: str, bearer: str | None) -> Path:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    path = LOG_DIR / f"{name}.lua"
    auth = f'wrk.headers["Authorization"] = "Bearer {bearer}"\n' if bearer else ""
    path.write_text(_LUA.format(auth=auth))
    return path


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, script: Path) -> dict[str, float]:
    output = subprocess.run(
        [*WRK, "-s", str(script), url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    (LOG_DIR / f"{script.stem}.wrk.txt").write_text(output)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        raise RuntimeError(f"{url}: {non_2xx.group(1)} failed requests; see {LOG_DIR}")
    return {"rps": rps, "p99_ms": _ms(p99.group(1), p99.group(2))}


def run() -> list[dict[str, Any]]:
    """Alternate the two servers for ROUNDS rounds and compare medians: on a shared VM the
    machine's speed drifts within minutes, and interleaving cancels most of that drift."""
    from bench.minimal_app import create_table

    create_table()
    minimal_runs, platform_runs = [], []
    with (
        gunicorn("minimal-api", "bench.minimal_app:app", MINIMAL_PORT),
        gunicorn("platform-api", "api.wsgi:app", PLATFORM_PORT),
    ):
        base = f"http://127.0.0.1:{PLATFORM_PORT}"
        minimal_script = _script("minimal", None)
        platform_script = _script("platform", token(base))
        for _ in range(ROUNDS):
            minimal_runs.append(wrk(f"http://127.0.0.1:{MINIMAL_PORT}/submit", minimal_script))
            platform_runs.append(wrk(f"{base}/api/v1/jobs", platform_script))
            env.flush_redis()
    minimal = {k: median(r[k] for r in minimal_runs) for k in ("rps", "p99_ms")}
    ours = {k: median(r[k] for r in platform_runs) for k in ("rps", "p99_ms")}
    throughput = ours["rps"] / minimal["rps"]
    latency = ours["p99_ms"] / minimal["p99_ms"]
    return [
        {
            "name": f"submit throughput, 50 conns, median of {ROUNDS} (req/s)",
            "baseline": round(minimal["rps"], 1),
            "platform": round(ours["rps"], 1),
            "ratio": round(throughput, 2),
            "target": ">= 0.5",
            "pass": throughput >= 0.5,
        },
        {
            "name": f"submit p99 latency, 50 conns, median of {ROUNDS} (ms)",
            "baseline": round(minimal["p99_ms"], 1),
            "platform": round(ours["p99_ms"], 1),
            "ratio": round(latency, 2),
            "target": "<= 2.0",
            "pass": latency <= 2.0,
        },
    ]
