"""Live updates: the delay from a worker's state change to the event on a connected SSE
client, with 50 clients connected to GET /api/v1/jobs/stream. Target: p99 < 100 ms.

Each event carries the time its change committed (`ts`); every client notes when the event
arrived (same machine, same clock). Only worker-side changes count (started, progress,
succeeded): they are what "live" is for.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from contextlib import ExitStack

import requests

from bench import procs
from bench.client import API, ApiClient
from bench.core import Comparison, Context, env_int

NAME = "live"
PORT = 8104
TARGET_MS = 100.0
WORKER_TYPES = {"started", "progress", "succeeded"}


def _listen(base: str, token: str, jobs: int, delays: list[float], ready: threading.Event,
            lock: threading.Lock) -> None:  # fmt: skip
    done = 0
    with requests.get(
        f"{base}{API}/jobs/stream",
        headers={"Authorization": f"Bearer {token}"},
        stream=True,
        timeout=120,
    ) as response:
        response.raise_for_status()
        ready.set()
        for line in response.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if event["type"] in WORKER_TYPES:
                with lock:
                    delays.append((time.time() - event["ts"]) * 1000)
            if event["type"] == "succeeded":
                done += 1
                if done >= jobs:
                    return


def run(ctx: Context) -> list[Comparison]:
    clients = env_int("BENCH_SSE_CLIENTS", 50)
    jobs = env_int("BENCH_SSE_JOBS", 20)
    base = f"http://127.0.0.1:{PORT}"
    delays: list[float] = []
    lock = threading.Lock()
    with ExitStack() as stack:
        stack.enter_context(
            procs.service(
                "live-api",
                [
                    str(procs.VENV_BIN / "gunicorn"),
                    "--bind",
                    f"127.0.0.1:{PORT}",
                    "--workers",
                    "2",
                    "--threads",
                    str(clients + 8),
                    "--log-level",
                    "warning",
                    "api.wsgi:app",
                ],  # fmt: skip
                procs.http_ok(f"{base}/healthz"),
            )
        )
        stack.enter_context(
            procs.celery_worker("live-worker", "shared.celery_app", "diagnostics", "bench-live")
        )
        user = ApiClient.new_user(base)
        stack.callback(user.close)
        readies = [threading.Event() for _ in range(clients)]
        threads = [
            threading.Thread(
                target=_listen, args=(base, user.token, jobs, delays, ready, lock), daemon=True
            )
            for ready in readies
        ]
        for thread in threads:
            thread.start()
        for ready in readies:
            if not ready.wait(30):
                raise RuntimeError("SSE clients did not connect")
        print(f"[live] {clients} clients connected; {jobs} debug.sleep jobs", flush=True)
        for _ in range(jobs):
            user._call(
                "POST", f"{API}/jobs", 202,
                json={"processor": "debug.sleep", "params": {"seconds": 0.2, "steps": 4}},
            )  # fmt: skip
            time.sleep(0.1)
        for thread in threads:
            thread.join(120)
    delays.sort()
    p99 = delays[int(len(delays) * 0.99) - 1]
    p50 = statistics.median(delays)
    print(f"[live]   {len(delays)} deliveries: p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
    return [
        Comparison(
            bench=NAME,
            measure=f"event delay p99, {clients} SSE clients",
            unit="ms",
            baseline_name="budget",
            baseline=TARGET_MS,
            platform=p99,
            target_op="<=",
            target=1.0,
            details={"deliveries": len(delays), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2)},
        )
    ]
