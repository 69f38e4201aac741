"""`python -m bench [--only NAME ...]`: run the benches side by side, print and save the results.

A MISS is reported, not raised: this is a measurement, not a test. The exit status is non-zero
only when a bench could not run (or was interrupted); the other benches still run and report.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from bench import env, procs, wrk
from bench.core import Comparison, Context, env_int, machine, machine_line, other_activity

# name -> module with run(ctx) -> list[Comparison]; a new bench is one more line here.
BENCHES: dict[str, str] = {
    "e2e": "bench.e2e",
    "submit": "bench.submit_path",
    "files": "bench.files",
    "deploy": "bench.deploy",
    "live": "bench.live",
    "release": "bench.release",
    "webhooks": "bench.webhooks",
    "proxy": "bench.proxy",
}
RESULTS = env.LOG_DIR / "results.json"


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM (make killed, CI timeout) unwinds like Ctrl-C, so every `finally` stops the
    servers and workers the bench started."""
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Dockyard beside the simplest thing doing the same work, in one run. "
        "Environment: BENCH_N (jobs end to end, default 500), BENCH_ROUNDS (alternating wrk "
        "rounds of the submit bench, default 3).",
    )
    parser.add_argument(
        "--only",
        choices=sorted(BENCHES),
        action="append",
        metavar="NAME",
        help=f"run only this bench (repeatable): {', '.join(BENCHES)}",
    )
    return parser.parse_args(argv)


def summary_table(comparisons: list[Comparison]) -> str:
    header = ("measure", "unit", "baseline", "platform", "ratio", "target", "result")
    rows = [
        (
            c.measure,
            c.unit,
            f"{c.baseline:.1f} ({c.baseline_name})",
            f"{c.platform:.1f}",
            f"{c.ratio:.2f}",
            c.target_text,
            "PASS" if c.passed else "MISS",
        )
        for c in comparisons
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    numeric = {3, 4}  # right-aligned columns

    def fmt(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([fmt(header), rule, *(fmt(row) for row in rows)])


@dataclass
class Outcome:
    """What the benches produced: their comparisons, the error of each that failed, and the
    seconds each took."""

    comparisons: list[Comparison] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _announce(
    started_at: datetime, info: dict[str, Any], settings: dict[str, Any], selected: list[str]
) -> list[str]:
    """Print what runs on which machine; returns the other busy processes at the start."""
    print(f"[bench] {started_at:%Y-%m-%d %H:%M:%S} UTC; machine: {machine_line(info)}")
    print(f"[bench] settings: {settings}; benches: {', '.join(selected)}", flush=True)
    busy_at_start = other_activity()
    if busy_at_start:
        print(
            f"[bench] warning: {len(busy_at_start)} other test/worker/server processes are "
            "running and share the CPUs; figures will be noisier (listed in results.json)",
            flush=True,
        )
    return busy_at_start


def _run_one(name: str, ctx: Context, outcome: Outcome) -> None:
    """One bench; its failure is recorded and printed, and the next bench still runs."""
    began = time.monotonic()
    try:
        results = importlib.import_module(BENCHES[name]).run(ctx)
    except Exception as error:
        traceback.print_exc()
        outcome.errors[name] = f"{type(error).__name__}: {error}"
        print(f"[bench] {name} FAILED: {outcome.errors[name]}", flush=True)
        return
    finally:
        outcome.timings[name] = round(time.monotonic() - began, 1)
    for comparison in results:
        print(f"[{name}] {comparison.line()}", flush=True)
    outcome.comparisons += results


def _run_all(selected: list[str], n: int, rounds: int, outcome: Outcome) -> int | None:
    """A fresh database and Redis, then each bench in turn; the exit status when the run
    stopped short (interrupted, or the set-up failed), None when every bench had its turn."""
    db: env.Database | None = None
    try:
        env.recreate_database()
        env.migrate()
        env.flush_redis()
        db = env.Database()
        ctx = Context(n=n, rounds=rounds, db=db)
        for name in selected:
            _run_one(name, ctx, outcome)
    except KeyboardInterrupt:
        print("\n[bench] interrupted; servers and workers stopped", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("[bench] could not prepare the bench's database and Redis", file=sys.stderr)
        return 1
    finally:
        if db is not None:
            db.close()
        try:
            env.flush_redis()
        except Exception as error:
            print(f"[bench] could not flush Redis at the end: {error}", file=sys.stderr)
    return None


def _print_summary(
    info: dict[str, Any], busy_at_start: list[str], busy_at_end: list[str], outcome: Outcome
) -> None:
    print()
    print(f"Machine: {machine_line(info)}")
    if busy_at_start or busy_at_end:
        print(
            f"Other processes sharing the CPUs: {len(busy_at_start)} at start, "
            f"{len(busy_at_end)} at the end (see results.json)"
        )
    if outcome.comparisons:
        print(summary_table(outcome.comparisons))
    for name, error in outcome.errors.items():
        print(f"{name}: did not run to the end: {error}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    # Also when started in the background by a script, where SIGINT arrives ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    env.apply()
    n = env_int("BENCH_N", 500)
    rounds = env_int("BENCH_ROUNDS", 3)
    selected = args.only or list(BENCHES)
    info = machine()
    started_at = datetime.now(UTC)
    settings = {
        "n": n,
        "rounds": rounds,
        "gunicorn": " ".join(procs.GUNICORN_ARGS),
        "worker": f"celery worker -c {procs.WORKER_CONCURRENCY} (prefork)",
        "wrk": f"-t{wrk.THREADS} -c{wrk.CONNECTIONS} -d{wrk.DURATION_S}s --latency",
    }
    busy_at_start = _announce(started_at, info, settings, selected)
    outcome = Outcome()
    stopped = _run_all(selected, n, rounds, outcome)
    if stopped is not None:
        return stopped

    busy_at_end = other_activity()
    _print_summary(info, busy_at_start, busy_at_end, outcome)
    document: dict[str, Any] = {
        "started_at": started_at.isoformat(),
        "machine": {**info, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "other_processes": {"at_start": busy_at_start, "at_end": busy_at_end},
        "settings": settings,
        "seconds_per_bench": outcome.timings,
        "results": [c.as_json() for c in outcome.comparisons],
        "errors": outcome.errors,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults written to {RESULTS.relative_to(env.ROOT)}; logs in var/bench/")
    return 1 if outcome.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
