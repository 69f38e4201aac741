"""Delayed jobs: how late a job with a `run_at` starts. 200 (`BENCH_DELAYED_JOBS`) `debug.echo`
jobs are submitted with `run_at` spread evenly over 20 s (`BENCH_DELAYED_SPREAD`), starting a
few seconds after the last submit; beat's release tick (workers/release.py, every
RELEASE_INTERVAL) releases them and a diagnostics worker runs them. Target: p99 <= 1 s.

Lateness is measured to the job's `started_at` (run_at to a worker starting it: release,
publish and pick-up together), the figure a user sees; the release alone (to `published_at`)
is reported beside it. Every clock is this machine's.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

from bench import procs
from bench.client import API, ApiClient
from bench.core import Comparison, Context, env_int

NAME = "release"
PORT = 8105
BUDGET_MS = 1000.0
LEAD_S = 5.0  # the first job is due this long after the submits start
SUBMITTERS = 4
_LATENESS = """
SELECT percentile_cont(%s) WITHIN GROUP (ORDER BY extract(epoch FROM
    CASE WHEN %s = 'started_at' THEN started_at ELSE published_at END - run_at)) * 1000
FROM jobs WHERE run_at IS NOT NULL AND status = 'succeeded'
"""


def run(ctx: Context) -> list[Comparison]:
    jobs = env_int("BENCH_DELAYED_JOBS", 200)
    spread = env_int("BENCH_DELAYED_SPREAD", 20)
    base = f"http://127.0.0.1:{PORT}"
    with ExitStack() as stack:
        stack.enter_context(procs.gunicorn("release-api", "api.wsgi:app", PORT))
        stack.enter_context(
            procs.celery_worker("release-maintenance", "shared.celery_app", "maintenance",
                                "bench-maintenance")
        )  # fmt: skip
        stack.enter_context(
            procs.celery_worker("release-worker", "shared.celery_app", "diagnostics",
                                "bench-release")
        )  # fmt: skip
        stack.enter_context(procs.celery_beat("release-beat"))
        user = ApiClient.new_user(base)
        stack.callback(user.close)
        first = datetime.now(UTC) + timedelta(seconds=LEAD_S)
        due = [first + timedelta(seconds=spread * i / jobs) for i in range(jobs)]
        print(f"[release] {jobs} jobs due over {spread} s from {first:%H:%M:%S}", flush=True)

        def submit(run_at: datetime) -> None:
            client = ApiClient(base, user.token)
            try:
                client._call(
                    "POST", f"{API}/jobs", 202,
                    json={"processor": "debug.echo", "params": {"message": "due"},
                          "run_at": run_at.isoformat()},
                )  # fmt: skip
            finally:
                client.close()

        with ThreadPoolExecutor(SUBMITTERS) as pool:
            list(pool.map(submit, due))
        if datetime.now(UTC) >= first:
            raise RuntimeError("the submits took longer than the lead; raise LEAD_S")
        procs.wait_until(
            lambda: user.count_with_status("succeeded", stop_at=jobs) >= jobs,
            timeout=spread + 60,
            what=f"{jobs} delayed jobs to succeed",
            interval=1.0,
        )

    def lateness_ms(until: str, fraction: float) -> float:
        """A percentile of run_at to `until` (started_at or published_at), in ms."""
        value = ctx.db.scalar(_LATENESS, (fraction, until))
        return float(value)

    p99 = lateness_ms("started_at", 0.99)
    details = {
        "jobs": ctx.db.scalar("SELECT count(*) FROM jobs WHERE run_at IS NOT NULL"),
        "spread_s": spread,
        "start_p50_ms": round(lateness_ms("started_at", 0.5), 1),
        "start_p99_ms": round(p99, 1),
        "start_max_ms": round(lateness_ms("started_at", 1.0), 1),
        "published_p50_ms": round(lateness_ms("published_at", 0.5), 1),
        "published_p99_ms": round(lateness_ms("published_at", 0.99), 1),
        "published_min_ms": round(lateness_ms("published_at", 0.0), 1),
    }
    print(f"[release]   {details}", flush=True)
    return [
        Comparison(
            bench=NAME,
            measure=f"delayed-job lateness p99, {jobs} jobs over {spread} s",
            unit="ms",
            baseline_name="budget",
            baseline=BUDGET_MS,
            platform=p99,
            target_op="<=",
            target=1.0,
            details=details,
        )
    ]
