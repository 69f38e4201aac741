"""End to end: N no-op tasks on raw Celery vs N debug.echo jobs through the platform's API.

Both sides run one prefork worker with concurrency 2 on the same broker and result backend,
after a short warm-up; both clocks run from the first submit until a poll from one client sees
the last result (the clock stops at the start of that poll, not when its answer arrives).
The CPU each part used in the window is reported too: on two shared cores the throughput
ratio is mostly a ratio of CPU spent per job, and the breakdown says whose.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from bench import procs
from bench.client import ACTIVE, FAILED, ApiClient
from bench.core import Comparison, Context
from bench.cpu import CpuMeter, describe, per_unit_ms
from bench.env import flush_redis

NAME = "e2e"
PLATFORM_PORT = 8100
CLIENTS = 8
WARMUP = 16  # jobs or tasks run before the clock starts: pools, connections, imports
POLL_S = 0.2  # the platform's poll goes through its API, which it loads: not more often
# Raw Celery's drain is a count(*) on the result table, nearly free, so it is polled finer:
# that only makes the baseline's time more exact (never shorter than the truth), which can
# only make the target harder to reach.
RAW_POLL_S = 0.05


def drain_timeout(n: int) -> float:
    """Generous (10 jobs/s would be a collapse) but bounded."""
    return 30.0 + n / 10


def _poll_until(
    done: Callable[[], bool], timeout: float, what: str, interval: float = POLL_S
) -> float:
    """Call `done()` every `interval` seconds until true; return the perf_counter at the start
    of the poll that saw completion (what that poll saw was true from then on)."""
    deadline = time.perf_counter() + timeout
    while True:
        started = time.perf_counter()
        if done():
            return started
        if started > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(max(0.0, started + interval - time.perf_counter()))


def raw_celery(ctx: Context) -> dict[str, Any]:
    """Submit N no-op tasks from one thread, then drain by counting stored results."""
    from bench import raw_celery

    raw_celery.create_result_tables()
    succeeded = "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'"
    with procs.celery_worker(
        "raw-worker", "bench.raw_celery", raw_celery.QUEUE, node="raw"
    ) as worker:
        for index in range(WARMUP):
            raw_celery.noop.apply_async((index,))
        procs.wait_until(lambda: ctx.db.scalar(succeeded) >= WARMUP, 60, "raw warm-up tasks")
        ctx.db.execute("DELETE FROM celery_taskmeta")

        meter = CpuMeter({"worker": worker.pid})
        meter.start()
        started = time.perf_counter()
        for index in range(ctx.n):
            raw_celery.noop.apply_async((index,))
        submitted = time.perf_counter()
        finished = _poll_until(
            lambda: ctx.db.scalar(succeeded) >= ctx.n,
            drain_timeout(ctx.n),
            "raw Celery results",
            interval=RAW_POLL_S,
        )
        spent = meter.stop()
    return {"seconds": finished - started, "submit_seconds": submitted - started, "cpu": spent}


def _submit_all(base: str, token: str, n: int, prefix: str) -> None:
    """N submits from CLIENTS threads, each with its own HTTP session (keep-alive)."""
    stop = threading.Event()  # set on any failure or Ctrl-C: the other threads stop too

    def client_thread(indices: range) -> None:
        client = ApiClient(base, token)
        try:
            for index in indices:
                if stop.is_set():
                    return
                client.submit_echo(f"{prefix}-{index}")
        finally:
            client.close()

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client_thread, range(i, n, CLIENTS)) for i in range(CLIENTS)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            stop.set()
            raise


def _all_succeeded(poller: ApiClient, n: int) -> bool:
    """The cheap poll: one `limit=1` request per active status while work remains, and the
    paginated count of succeeded jobs only once nothing is active any more."""
    if any(poller.any_with_status(status) for status in ACTIVE):
        return False
    if poller.count_with_status("succeeded", stop_at=n) >= n:
        return True
    broken = {s: poller.count_with_status(s) for s in FAILED}
    if any(broken.values()):
        raise RuntimeError(f"platform jobs did not succeed: {broken}")
    return False


def platform(ctx: Context) -> dict[str, Any]:
    """Submit N debug.echo jobs over HTTP from CLIENTS threads, then poll the list endpoint."""
    base = f"http://127.0.0.1:{PLATFORM_PORT}"
    with ExitStack() as stack:
        api = stack.enter_context(procs.gunicorn("platform-api", "api.wsgi:app", PLATFORM_PORT))
        worker = stack.enter_context(
            procs.celery_worker("platform-worker", "shared.celery_app", "diagnostics", "bench")
        )
        warm = ApiClient.new_user(base)
        stack.callback(warm.close)
        _submit_all(base, warm.token, WARMUP, "warm")
        _poll_until(lambda: _all_succeeded(warm, WARMUP), 60, "platform warm-up jobs")

        # A fresh user: the list endpoint then shows exactly the measured jobs.
        poller = ApiClient.new_user(base)
        stack.callback(poller.close)
        meter = CpuMeter({"api": api.pid, "worker": worker.pid})
        meter.start()
        started = time.perf_counter()
        _submit_all(base, poller.token, ctx.n, "job")
        submitted = time.perf_counter()
        finished = _poll_until(
            lambda: _all_succeeded(poller, ctx.n), drain_timeout(ctx.n), "platform jobs"
        )
        spent = meter.stop()
    return {"seconds": finished - started, "submit_seconds": submitted - started, "cpu": spent}


def _detail(measured: dict[str, Any], n: int) -> dict[str, Any]:
    return {
        "seconds": round(measured["seconds"], 3),
        "submit_seconds": round(measured["submit_seconds"], 3),
        "cpu_ms_per_job": per_unit_ms(measured["cpu"], n),
    }


def run(ctx: Context) -> list[Comparison]:
    n = ctx.n
    print(f"[e2e] raw Celery: {n} no-op tasks, worker -c {procs.WORKER_CONCURRENCY}", flush=True)
    raw = raw_celery(ctx)
    flush_redis()
    print(
        f"[e2e]   submitted in {raw['submit_seconds']:.2f}s, all results in "
        f"{raw['seconds']:.2f}s: {n / raw['seconds']:.1f} tasks/s",
        flush=True,
    )
    print(f"[e2e]   {describe(raw['cpu'], n, 'task')}", flush=True)
    ctx.db.execute("DELETE FROM celery_taskmeta")
    print(
        f"[e2e] platform: {n} debug.echo jobs over HTTP from {CLIENTS} clients, "
        f"worker -c {procs.WORKER_CONCURRENCY}",
        flush=True,
    )
    ours = platform(ctx)
    flush_redis()
    print(
        f"[e2e]   submitted in {ours['submit_seconds']:.2f}s, all succeeded in "
        f"{ours['seconds']:.2f}s: {n / ours['seconds']:.1f} jobs/s",
        flush=True,
    )
    print(f"[e2e]   {describe(ours['cpu'], n, 'job')}", flush=True)
    return [
        Comparison(
            bench=NAME,
            measure=f"end to end, {n} jobs",
            unit="jobs/s",
            baseline_name="raw Celery",
            baseline=n / raw["seconds"],
            platform=n / ours["seconds"],
            target_op=">=",
            target=1.0,
            details={
                "n": n,
                "clients": CLIENTS,
                "poll_interval_s": {"raw_celery": RAW_POLL_S, "platform": POLL_S},
                "raw_celery": _detail(raw, n),
                "platform": _detail(ours, n),
            },
        )
    ]
