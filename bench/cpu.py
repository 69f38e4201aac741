"""Where the CPU went during a measurement: per server or worker, PostgreSQL, Redis, the bench.

On a small machine every part shares the same cores, so a throughput ratio is largely a ratio
of CPU spent per job. Attributing that CPU to the parts explains a MISS (and shows another
tenant's load or the hypervisor's steal) instead of leaving only a number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class _Proc:
    pid: int
    pgrp: int
    comm: str
    seconds: float  # own CPU plus that of reaped children (backends, workers that exited)


def _processes() -> list[_Proc]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state) of proc(5): pgrp is field 5, utime..cstime 14..17.
        ticks = sum(int(x) for x in fields[11:15])
        found.append(_Proc(int(entry.name), int(fields[2]), comm, ticks / _TICK))
    return found


def _machine() -> tuple[float, float, float]:
    """(busy, total, steal) CPU seconds of the whole machine since boot."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return (total - idle) / _TICK, total / _TICK, values[7] / _TICK


class CpuMeter:
    """CPU seconds spent between `start()` and `stop()`, by part.

    `groups` maps a label to the process-group id of a service the bench started (its
    children, e.g. prefork pool processes and gunicorn workers, share the group).
    """

    def __init__(self, groups: dict[str, int]) -> None:
        self.groups = groups
        self._before: dict[str, float] = {}

    def _snapshot(self) -> dict[str, float]:
        parts = dict.fromkeys([*self.groups, "postgres", "redis", "bench", "other"], 0.0)
        by_group = {pgid: label for label, pgid in self.groups.items()}
        me = os.getpid()
        for proc in _processes():
            if proc.pgrp in by_group:
                parts[by_group[proc.pgrp]] += proc.seconds
            elif proc.comm == "postgres" or proc.comm.startswith("postgres:"):
                parts["postgres"] += proc.seconds
            elif proc.comm.startswith("redis-server"):
                parts["redis"] += proc.seconds
            elif proc.pid == me or proc.comm == "wrk":
                parts["bench"] += proc.seconds  # the load generator: client threads or wrk
            else:
                parts["other"] += proc.seconds
        busy, total, steal = _machine()
        parts.update(machine_busy=busy, machine_total=total, steal=steal)
        return parts

    def start(self) -> None:
        self._before = self._snapshot()

    def stop(self) -> dict[str, float]:
        """CPU seconds per part over the window, plus machine-wide busy/total/steal."""
        after = self._snapshot()
        return {key: after[key] - self._before.get(key, 0.0) for key in after}


def per_unit_ms(spent: dict[str, float], units: int) -> dict[str, float]:
    """Milliseconds of CPU per job or request for each part (machine figures left out)."""
    skip = {"machine_busy", "machine_total", "steal"}
    return {k: round(1000 * v / units, 2) for k, v in spent.items() if k not in skip}


def describe(spent: dict[str, float], units: int, unit: str) -> str:
    parts = per_unit_ms(spent, units)
    shown = ", ".join(f"{k} {v:.2f}" for k, v in parts.items() if v >= 0.01)
    total = spent["machine_total"] or 1.0
    return (
        f"CPU ms per {unit}: {shown}; machine busy {100 * spent['machine_busy'] / total:.0f}%"
        f", steal {100 * spent['steal'] / total:.1f}%"
    )
