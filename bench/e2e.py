"""End to end: N no-op tasks on plain Celery vs N debug.echo jobs through the platform's API,
submitted in batches and one by one.

(a) Plain Celery as a team would run it for the same work: the same Redis broker, Celery's
PostgreSQL result backend, late acks, prefetch 1, task events on (`-E`, Flower needs them),
one prefork worker `-c 2`; N tasks sent with `apply_async` from CLIENTS threads, then drained.
(b1) N jobs through `POST /jobs/batch`, BATCH_SIZE a request; (b2) N through single
`POST /jobs`; both from CLIENTS clients, on one prefork worker `-c 2`, polled through the API
until all are `succeeded`. Each side after a short warm-up; every clock runs from the first
submit until a poll from one client sees the last result (the clock stops at the start of
that poll, not when its answer arrives). The submit phases of (b1) and (b2) also give the
jobs accepted per second each way. The CPU each part used in the window is reported too: on
two shared cores the throughput ratio is mostly a ratio of CPU spent per job, and the
breakdown says whose.
"""

from __future__ import annotations

import math
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
BATCH_SIZE = 100  # jobs per POST /jobs/batch
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


def _in_threads(count: int, work: Callable[[range, threading.Event], None]) -> None:
    """`work(indices, stop)` in CLIENTS threads, thread i taking i, i + CLIENTS, ... of
    range(count). `stop` is set on any failure (or Ctrl-C) so the other threads end early;
    the failure is raised."""
    stop = threading.Event()
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(work, range(i, count, CLIENTS), stop) for i in range(CLIENTS)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            stop.set()
            raise


def raw_celery(ctx: Context) -> dict[str, Any]:
    """Send N no-op tasks from CLIENTS threads, then drain by counting stored results."""
    from bench import raw_celery

    raw_celery.create_result_tables()
    succeeded = "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'"

    def send(indices: range, stop: threading.Event) -> None:
        for index in indices:
            if stop.is_set():
                return
            raw_celery.noop.apply_async((index,))

    with procs.celery_worker(
        "raw-worker", "bench.raw_celery", raw_celery.QUEUE, node="raw"
    ) as worker:
        _in_threads(WARMUP, send)
        procs.wait_until(lambda: ctx.db.scalar(succeeded) >= WARMUP, 60, "raw warm-up tasks")
        ctx.db.execute("DELETE FROM celery_taskmeta")

        meter = CpuMeter({"worker": worker.pid})
        meter.start()
        started = time.perf_counter()
        _in_threads(ctx.n, send)
        submitted = time.perf_counter()
        finished = _poll_until(
            lambda: ctx.db.scalar(succeeded) >= ctx.n,
            drain_timeout(ctx.n),
            "raw Celery results",
            interval=RAW_POLL_S,
        )
        spent = meter.stop()
    return {"seconds": finished - started, "submit_seconds": submitted - started, "cpu": spent}


Submitter = Callable[[str, str, int, str], None]


def submit_singly(base: str, token: str, n: int, prefix: str) -> None:
    """N single POST /jobs from CLIENTS threads, each with its own HTTP session."""

    def client_thread(indices: range, stop: threading.Event) -> None:
        client = ApiClient(base, token)
        try:
            for index in indices:
                if stop.is_set():
                    return
                client.submit_echo(f"{prefix}-{index}")
        finally:
            client.close()

    _in_threads(n, client_thread)


def submit_in_batches(base: str, token: str, n: int, prefix: str) -> None:
    """N jobs as POST /jobs/batch of BATCH_SIZE each, the batches shared by CLIENTS threads."""

    def client_thread(batches: range, stop: threading.Event) -> None:
        client = ApiClient(base, token)
        try:
            for batch in batches:
                if stop.is_set():
                    return
                first = batch * BATCH_SIZE
                last = min(n, first + BATCH_SIZE)
                client.submit_echo_batch([f"{prefix}-{index}" for index in range(first, last)])
        finally:
            client.close()

    _in_threads(math.ceil(n / BATCH_SIZE), client_thread)


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


def platform(ctx: Context, submit_all: Submitter) -> dict[str, Any]:
    """Submit N debug.echo jobs over HTTP with `submit_all`, then poll the list endpoint."""
    base = f"http://127.0.0.1:{PLATFORM_PORT}"
    with ExitStack() as stack:
        api = stack.enter_context(procs.gunicorn("platform-api", "api.wsgi:app", PLATFORM_PORT))
        worker = stack.enter_context(
            procs.celery_worker("platform-worker", "shared.celery_app", "diagnostics", "bench")
        )
        warm = ApiClient.new_user(base)
        stack.callback(warm.close)
        submit_all(base, warm.token, WARMUP, "warm")
        _poll_until(lambda: _all_succeeded(warm, WARMUP), 60, "platform warm-up jobs")

        # A fresh user: the list endpoint then shows exactly the measured jobs.
        poller = ApiClient.new_user(base)
        stack.callback(poller.close)
        meter = CpuMeter({"api": api.pid, "worker": worker.pid})
        meter.start()
        started = time.perf_counter()
        submit_all(base, poller.token, ctx.n, "job")
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


def _platform_run(ctx: Context, what: str, submit_all: Submitter) -> dict[str, Any]:
    n = ctx.n
    print(f"[e2e] platform: {n} debug.echo jobs {what}, worker -c {procs.WORKER_CONCURRENCY}")
    measured = platform(ctx, submit_all)
    flush_redis()
    print(
        f"[e2e]   accepted in {measured['submit_seconds']:.2f}s "
        f"({n / measured['submit_seconds']:.1f} jobs/s), all succeeded in "
        f"{measured['seconds']:.2f}s: {n / measured['seconds']:.1f} jobs/s",
        flush=True,
    )
    print(f"[e2e]   {describe(measured['cpu'], n, 'job')}", flush=True)
    return measured


def run(ctx: Context) -> list[Comparison]:
    n = ctx.n
    print(
        f"[e2e] plain Celery: {n} no-op tasks from {CLIENTS} threads, "
        f"worker -E -c {procs.WORKER_CONCURRENCY}",
        flush=True,
    )
    raw = raw_celery(ctx)
    flush_redis()
    print(
        f"[e2e]   sent in {raw['submit_seconds']:.2f}s, all results in "
        f"{raw['seconds']:.2f}s: {n / raw['seconds']:.1f} tasks/s",
        flush=True,
    )
    print(f"[e2e]   {describe(raw['cpu'], n, 'task')}", flush=True)
    ctx.db.execute("DELETE FROM celery_taskmeta")
    batched = _platform_run(
        ctx, f"in POST /jobs/batch of {BATCH_SIZE} from {CLIENTS} clients", submit_in_batches
    )
    single = _platform_run(ctx, f"by single POST /jobs from {CLIENTS} clients", submit_singly)
    details = {
        "n": n,
        "clients": CLIENTS,
        "batch_size": BATCH_SIZE,
        "poll_interval_s": {"raw_celery": RAW_POLL_S, "platform": POLL_S},
        "raw_celery": _detail(raw, n),
        "platform_batches": _detail(batched, n),
        "platform_single": _detail(single, n),
    }
    return [
        Comparison(
            bench=NAME,
            measure=f"end to end, {n} jobs, batches of {BATCH_SIZE}",
            unit="jobs/s",
            baseline_name="plain Celery",
            baseline=n / raw["seconds"],
            platform=n / batched["seconds"],
            target_op=">=",
            target=1.0,
            details=details,
        ),
        Comparison(
            bench=NAME,
            measure=f"end to end, {n} jobs, single submits",
            unit="jobs/s",
            baseline_name="plain Celery",
            baseline=n / raw["seconds"],
            platform=n / single["seconds"],
            target_op=">=",
            target=0.6,
            details=details,
        ),
        Comparison(
            bench=NAME,
            measure=f"jobs accepted, {n} jobs, batches vs single",
            unit="jobs/s",
            baseline_name="single POST /jobs",
            baseline=n / single["submit_seconds"],
            platform=n / batched["submit_seconds"],
            target_op=">=",
            target=5.0,
            details=details,
        ),
    ]
