"""The submit path under 50 connections: a minimal INSERT+LPUSH endpoint vs POST /api/v1/jobs.

No platform worker runs during this bench: the queue only grows (flushed between rounds and at
the end), so the worker's own database writes and CPU do not compete with the API being
measured, exactly as the minimal endpoint's list has no consumer.

Both servers run at once and are loaded in turn, for BENCH_ROUNDS alternating rounds (median
reported): on a shared VM the machine's speed drifts within minutes, and interleaving the two
sides spreads that drift over both instead of handing it to whichever ran second. Each run
also reports the CPU per request of each part (server, PostgreSQL, Redis, wrk).
"""

from __future__ import annotations

from contextlib import ExitStack
from statistics import median

from bench import procs, wrk
from bench.client import ECHO_JOB, ApiClient
from bench.core import Comparison, Context
from bench.cpu import CpuMeter, describe, per_unit_ms
from bench.env import flush_redis
from bench.minimal_app import TABLE_DDL

NAME = "submit"
MINIMAL_PORT = 8101
PLATFORM_PORT = 8100
WARMUP_S = 2  # per server, discarded: every gunicorn thread opens its pooled connections


def run(ctx: Context) -> list[Comparison]:
    ctx.db.execute(TABLE_DDL)
    minimal_url = f"http://127.0.0.1:{MINIMAL_PORT}/submit"
    platform_url = f"http://127.0.0.1:{PLATFORM_PORT}/api/v1/jobs"
    runs: dict[str, list[wrk.WrkResult]] = {"minimal": [], "platform": []}
    cpu: dict[str, list[dict[str, float]]] = {"minimal": [], "platform": []}
    print(
        f"[submit] wrk -t{wrk.THREADS} -c{wrk.CONNECTIONS} -d{wrk.DURATION_S}s, "
        f"{ctx.rounds} alternating round(s), platform worker stopped",
        flush=True,
    )
    with ExitStack() as stack:
        minimal = stack.enter_context(
            procs.gunicorn("minimal-api", "bench.minimal_app:app", MINIMAL_PORT)
        )
        platform = stack.enter_context(
            procs.gunicorn("platform-api", "api.wsgi:app", PLATFORM_PORT)
        )
        meter = CpuMeter({"minimal-api": minimal.pid, "platform-api": platform.pid})
        user = ApiClient.new_user(f"http://127.0.0.1:{PLATFORM_PORT}")
        stack.callback(user.close)
        scripts = {
            "minimal": (minimal_url, wrk.post_script("minimal", ECHO_JOB, {})),
            "platform": (
                platform_url,
                wrk.post_script("platform", ECHO_JOB, {"Authorization": f"Bearer {user.token}"}),
            ),
        }
        for side, (url, script) in scripts.items():
            wrk.run(url, script, f"{side}-warmup", duration_s=WARMUP_S)
        # Empty both queues between runs (the token survives: a JWT, nothing of it in Redis).
        flush_redis()
        for round_no in range(1, ctx.rounds + 1):
            for side, (url, script) in scripts.items():
                meter.start()
                result = wrk.run(url, script, f"{side}-round{round_no}")
                spent = meter.stop()
                runs[side].append(result)
                cpu[side].append(per_unit_ms(spent, max(result.requests, 1)))
                print(f"[submit]   round {round_no} {side:<8}: {result.summary()}", flush=True)
                print(f"[submit]     {describe(spent, max(result.requests, 1), 'request')}")
                flush_redis()
    return _compare(runs, cpu, ctx.rounds)


def _compare(
    runs: dict[str, list[wrk.WrkResult]], cpu: dict[str, list[dict[str, float]]], rounds: int
) -> list[Comparison]:
    def med(side: str, attribute: str) -> float:
        return median(getattr(result, attribute) for result in runs[side])

    details = {
        "wrk": f"-t{wrk.THREADS} -c{wrk.CONNECTIONS} -d{wrk.DURATION_S}s --timeout "
        f"{wrk.TIMEOUT_S}s --latency",
        "rounds": rounds,
        "platform_worker": "stopped",
        "runs": {side: [r.as_json() for r in results] for side, results in runs.items()},
        "cpu_ms_per_request": cpu,
    }
    suffix = f", median of {rounds}" if rounds > 1 else ""
    return [
        Comparison(
            bench=NAME,
            measure=f"submit throughput, 50 conns{suffix}",
            unit="req/s",
            baseline_name="minimal endpoint",
            baseline=med("minimal", "ok_per_s"),
            platform=med("platform", "ok_per_s"),
            target_op=">=",
            target=0.5,
            details=details,
        ),
        Comparison(
            bench=NAME,
            measure=f"submit p99 latency, 50 conns{suffix}",
            unit="ms",
            baseline_name="minimal endpoint",
            baseline=med("minimal", "p99_ms"),
            platform=med("platform", "p99_ms"),
            target_op="<=",
            target=2.0,
            details={"see": "details of the throughput comparison"},
        ),
    ]
