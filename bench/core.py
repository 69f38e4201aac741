"""What every bench shares: its inputs (Context) and its output (Comparison).

A bench is a module with `run(ctx) -> list[Comparison]`. Each comparison is one figure
measured twice in the same run, on a baseline and on the platform, because on a shared VM only
ratios measured side by side mean anything; absolute figures move from run to run.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.env import Database

_OPERATORS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


@dataclass
class Context:
    """Run-wide inputs, read once from the environment and the command line."""

    n: int
    rounds: int
    db: Database


@dataclass(frozen=True)
class Comparison:
    """One figure for the baseline and the platform, with the target for their ratio."""

    bench: str
    measure: str
    unit: str
    baseline_name: str
    baseline: float
    platform: float
    target_op: str  # ">=" or "<="
    target: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.platform / self.baseline if self.baseline else float("nan")

    @property
    def passed(self) -> bool:
        return _OPERATORS[self.target_op](self.ratio, self.target)

    @property
    def target_text(self) -> str:
        return f"{self.target_op} {self.target:.1f}"

    def line(self) -> str:
        """One line for the progress output: the pair, the ratio and the verdict."""
        return (
            f"{self.measure}: {self.baseline_name} {self.baseline:.1f} {self.unit}, "
            f"platform {self.platform:.1f} {self.unit}, ratio {self.ratio:.2f} "
            f"(target {self.target_text}) {'PASS' if self.passed else 'MISS'}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "measure": self.measure,
            "unit": self.unit,
            "baseline_name": self.baseline_name,
            "baseline": round(self.baseline, 2),
            "platform": round(self.platform, 2),
            "ratio": round(self.ratio, 3),
            "target": self.target_text,
            "pass": self.passed,
            "details": self.details,
        }


def env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"bench: {name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"bench: {name} must be >= {minimum}, got {value}")
    return value


def machine() -> dict[str, Any]:
    """Where the figures were taken: they only compare within one machine and one run."""
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        "unknown",
    )
    meminfo = dict(
        line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
    )
    mem_kib = int(meminfo.get("MemTotal", "0 kB").split()[0])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        # Anything else running (a test suite, a build) shares the cores with the bench.
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


_BUSY_WORDS = ("pytest", "celery", "gunicorn", "wrk", "docker build")


def other_activity() -> list[str]:
    """Other test runs, workers or servers on the machine: they share the cores with the
    bench, so the report says so rather than letting the figures silently suffer."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(word in cmdline for word in _BUSY_WORDS):
            found.append(f"{entry.name}: {cmdline.strip()[:120]}")
    return found


def machine_line(info: dict[str, Any]) -> str:
    load = " ".join(f"{x:.2f}" for x in info["load_average_at_start"])
    return (
        f"{info['nproc']} CPUs (nproc), {info['cpu_model']}, {info['ram_gib']} GiB RAM; "
        f"load average at start {load}"
    )
