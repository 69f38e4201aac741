"""End to end: N no-op tasks on raw Celery vs N debug.echo jobs through the HTTP API."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench import env
from bench.client import token
from bench.procs import celery_worker, gunicorn, wait_until

PLATFORM_PORT = 8100
CLIENTS = 8


def raw_celery(n: int) -> float:
    """Tasks per second, from the first submit until every result is stored."""
    from bench.raw_celery import noop

    with celery_worker("raw-worker", "bench.raw_celery", "bench_raw"):
        noop.apply_async((0,)).get(timeout=30)  # warm: tables created, connections open
        env.query_one("DELETE FROM celery_taskmeta")
        started = time.perf_counter()
        for index in range(n):
            noop.apply_async((index,))
        wait_until(
            lambda: (
                env.query_one("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'") >= n
            ),
            timeout=300,
            what="raw celery to drain",
        )
        return n / (time.perf_counter() - started)


def platform(n: int) -> float:
    """Jobs per second, from the first HTTP submit until every job has succeeded."""
    base = f"http://127.0.0.1:{PLATFORM_PORT}"
    with (
        gunicorn("platform-api", "api.wsgi:app", PLATFORM_PORT),
        celery_worker("platform-worker", "shared.celery_app", "diagnostics"),
    ):
        headers = {"Authorization": f"Bearer {token(base)}"}
        sessions = [requests.Session() for _ in range(CLIENTS)]

        def submit(index: int) -> None:
            session = sessions[index % CLIENTS]
            response = session.post(
                f"{base}/api/v1/jobs",
                headers=headers,
                timeout=30,
                json={"processor": "debug.echo", "params": {"message": f"m{index}"}},
            )
            response.raise_for_status()

        submit(0)
        wait_until(
            lambda: env.query_one("SELECT count(*) FROM jobs WHERE status = 'succeeded'") >= 1,
            60,
            "warm-up job",
        )
        env.query_one("SELECT 1")
        baseline = env.query_one("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
        started = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(submit, range(n)))
        submitted = time.perf_counter() - started
        print(f"[bench] platform: {n} HTTP submits in {submitted:.2f}s", flush=True)
        wait_until(
            lambda: (
                env.query_one("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
                >= baseline + n
            ),
            timeout=300,
            what="the platform to finish the jobs",
        )
        return n / (time.perf_counter() - started)


def run() -> list[dict[str, Any]]:
    n = int(os.environ.get("BENCH_N", "500"))
    raw = raw_celery(n)
    env.flush_redis()
    ours = platform(n)
    env.flush_redis()
    return [
        {
            "name": f"end to end, {n} jobs (jobs/s)",
            "baseline": round(raw, 1),
            "platform": round(ours, 1),
            "ratio": round(ours / raw, 2),
            "target": ">= 1.0",
            "pass": ours / raw >= 1.0,
        }
    ]
