"""Run the benches side by side in one go and print each pair with its ratio.

A MISS is reported, not raised: this is a measurement, not a test. Exit status is non-zero
only when a bench could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from bench import env

env.apply()  # before anything imports the platform's settings

BENCHES = {"e2e": "bench.e2e", "submit": "bench.submit_path"}


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{os.cpu_count()} cores, {model}, {memory_kb / 1024 / 1024:.0f} GiB RAM"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", choices=sorted(BENCHES), action="append")
    args = parser.parse_args()
    import importlib

    env.fresh_database()
    rows = []
    for name in args.only or list(BENCHES):
        print(f"[bench] running {name} ...", flush=True)
        rows += importlib.import_module(BENCHES[name]).run()
    print(f"\nMachine: {machine()}")
    header = f"{'measure':<52} {'baseline':>10} {'platform':>10} {'ratio':>7} {'target':>8}"
    print(header)
    print("-" * len(header) + "------")
    for row in rows:
        verdict = "PASS" if row["pass"] else "MISS"
        print(
            f"{row['name']:<52} {row['baseline']:>10} {row['platform']:>10} "
            f"{row['ratio']:>7} {row['target']:>8}  {verdict}"
        )
    out = Path("var/bench/results.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "results": rows}, indent=2))
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
