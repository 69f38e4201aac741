"""Webhooks: how long after a job ends its `job.succeeded` delivery reaches the endpoint.

One user subscribes a webhook to `job.succeeded` on a receiver in this process (a threaded
HTTP server on 127.0.0.1 answering 200), then submits 1,000 (`BENCH_WEBHOOK_JOBS`)
`debug.echo` jobs in batches of 100; a diagnostics worker runs them, each success records
its delivery in the job's transaction and sends it, and `worker -Q webhooks -c 4` (the
compose fleet's size) delivers them, with beat running the dispatcher as in production.
Lag: the job's `finished_at` to the moment the receiver has read the request. Target:
p99 <= 1 s. Every clock is this machine's.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench import procs
from bench.client import API, ApiClient
from bench.core import Comparison, Context, env_int

NAME = "webhooks"
PORT = 8106
BUDGET_MS = 1000.0
CONCURRENCY = 4
BATCH = 100
#: The receiver is on this machine: allow plain HTTP to loopback for the bench's processes.
#: Every delivery goes to this one endpoint, so its cap is the fleet's size (with the default
#: WEBHOOK_ENDPOINT_CONCURRENCY of 2, half the slots would only put deliveries back).
ENV = {
    "WEBHOOK_ALLOW_HTTP": "true",
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "WEBHOOK_ENDPOINT_CONCURRENCY": str(CONCURRENCY),
}
_RATES = """
SELECT count(*) / extract(epoch FROM max(j.finished_at) - min(j.finished_at)),
       count(*) / extract(epoch FROM max(d.delivered_at) - min(d.delivered_at))
FROM webhook_deliveries d JOIN jobs j ON j.id = d.job_id WHERE d.status = 'delivered'
"""
_FINISHED = "SELECT id::text, extract(epoch FROM finished_at) FROM jobs WHERE id = ANY(%s::uuid[])"


class Receiver:
    """Records when each delivery (by job id) arrived; answers 200."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.requests = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # the name http.server calls
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                at = time.time()
                job_id = json.loads(body)["data"]["id"]
                with lock:
                    receiver.requests += 1
                    receiver.arrived.setdefault(job_id, at)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(ctx: Context) -> list[Comparison]:
    jobs = env_int("BENCH_WEBHOOK_JOBS", 1000)
    base = f"http://127.0.0.1:{PORT}"
    previous = {name: os.environ.get(name) for name in ENV}
    os.environ.update(ENV)  # the API (saving the URL) and the workers (calling it)
    receiver = Receiver()
    try:
        with ExitStack() as stack:
            stack.enter_context(procs.gunicorn("webhooks-api", "api.wsgi:app", PORT))
            stack.enter_context(
                procs.celery_worker("webhooks-jobs", "shared.celery_app", "diagnostics",
                                    "bench-webhook-jobs")
            )  # fmt: skip
            stack.enter_context(
                procs.celery_worker("webhooks-worker", "shared.celery_app", "webhooks",
                                    "bench-webhooks", concurrency=CONCURRENCY)
            )  # fmt: skip
            stack.enter_context(procs.celery_beat("webhooks-beat"))
            user = ApiClient.new_user(base)
            stack.callback(user.close)
            user._call(
                "POST", f"{API}/webhooks", 201,
                json={"url": receiver.url, "events": ["job.succeeded"]},
            )  # fmt: skip
            print(f"[webhooks] {jobs} jobs in batches of {BATCH}", flush=True)
            for start in range(0, jobs, BATCH):
                count = min(BATCH, jobs - start)
                user.submit_echo_batch([f"hook {start + i}" for i in range(count)])
            procs.wait_until(
                lambda: len(receiver.arrived) >= jobs,
                timeout=120,
                what=f"{jobs} deliveries to arrive",
                interval=0.2,
            )
    finally:
        receiver.close()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    finished = {
        job_id: float(at) for job_id, at in ctx.db.rows(_FINISHED, (list(receiver.arrived),))
    }
    lags = [(receiver.arrived[job_id] - at) * 1000 for job_id, at in finished.items()]
    p99 = _percentile(lags, 0.99)
    [(jobs_per_s, deliveries_per_s)] = ctx.db.rows(_RATES)
    details = {
        "deliveries": len(lags),
        "requests": receiver.requests,  # more than deliveries: an at-least-once repeat
        "worker_concurrency": CONCURRENCY,
        "endpoint_concurrency": CONCURRENCY,
        "lag_p50_ms": round(statistics.median(lags), 1),
        "lag_p99_ms": round(p99, 1),
        "lag_max_ms": round(max(lags), 1),
        # The lag grows while jobs end faster than the fleet delivers.
        "jobs_ended_per_s": round(float(jobs_per_s), 1),
        "delivered_per_s": round(float(deliveries_per_s), 1),
    }
    print(f"[webhooks]   {details}", flush=True)
    return [
        Comparison(
            bench=NAME,
            measure=f"job end to webhook received p99, {jobs} deliveries, -c {CONCURRENCY}",
            unit="ms",
            baseline_name="budget",
            baseline=BUDGET_MS,
            platform=p99,
            target_op="<=",
            target=1.0,
            details=details,
        )
    ]
