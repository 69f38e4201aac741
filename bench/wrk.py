"""Load with wrk and read its report: requests/s and the latency distribution.

wrk's own latency figures are used (not a Python client's): a Python load generator on the
same two cores would measure its own GIL as much as the server.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.env import LOG_DIR

THREADS = 2
CONNECTIONS = 50
DURATION_S = 10
# Above wrk's default of 2 s: a request slower than the timeout is left out of the latency
# distribution, which would flatter the p99 of exactly the server that is struggling.
TIMEOUT_S = 10

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float  # every response, as wrk counts them
    ok_per_s: float  # 2xx/3xx responses only: what the comparison uses
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: dict[str, int]

    def summary(self) -> str:
        errors = sum(self.socket_errors.values())
        extra = f", {self.non_2xx} non-2xx" if self.non_2xx else ""
        extra += f", {errors} socket errors" if errors else ""
        return (
            f"{self.ok_per_s:.1f} req/s, p50 {self.p50_ms:.1f} ms, p90 {self.p90_ms:.1f} ms, "
            f"p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms{extra}"
        )

    def as_json(self) -> dict[str, Any]:
        return {key: round(v, 2) if isinstance(v, float) else v for key, v in asdict(self).items()}


def post_script(name: str, body: dict[str, Any], headers: dict[str, str]) -> Path:
    """A wrk Lua script that POSTs `body` as JSON with `headers` on every request."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    # A Lua long string: no escaping of the JSON needed.
    lines.append(f"wrk.body = [==[{json.dumps(body)}]==]")
    path = LOG_DIR / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(url: str, script: Path, label: str, duration_s: int = DURATION_S) -> WrkResult:
    """Run wrk against `url`; its report is kept in var/bench/LABEL.wrk.txt."""
    args = [
        "wrk",
        "-t",
        str(THREADS),
        "-c",
        str(CONNECTIONS),
        "-d",
        f"{duration_s}s",
        "--latency",
        "--timeout",
        f"{TIMEOUT_S}s",
        "-s",
        str(script),
        url,
    ]
    completed = subprocess.run(
        args, capture_output=True, text=True, timeout=duration_s + TIMEOUT_S + 30, check=False
    )
    report = LOG_DIR / f"{label}.wrk.txt"
    report.write_text(" ".join(args) + "\n\n" + completed.stdout + completed.stderr)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk exited with {completed.returncode}; see {report}")
    try:
        return parse(completed.stdout)
    except ValueError as error:
        raise RuntimeError(f"{error}; see {report}") from None


def parse(output: str) -> WrkResult:
    """Read wrk's text report (with --latency). Raises ValueError if a figure is missing."""

    def need(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output)
        if match is None:
            raise ValueError(f"wrk report has no match for {pattern!r}")
        return match

    def ms(match: re.Match[str], group: int = 1) -> float:
        return float(match.group(group)) * _UNITS_MS[match.group(group + 1)]

    done = need(r"(\d+) requests in " + _TIME)
    requests = int(done.group(1))
    seconds = ms(done, 2) / 1000
    rps = float(need(r"Requests/sec:\s+([\d.]+)").group(1))
    non_2xx_match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    non_2xx = int(non_2xx_match.group(1)) if non_2xx_match else 0
    errors_match = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = dict(
        zip(
            ("connect", "read", "write", "timeout"),
            (int(x) for x in errors_match.groups()) if errors_match else (0, 0, 0, 0),
            strict=True,
        )
    )
    ok = max(requests - non_2xx, 0)
    return WrkResult(
        requests_per_s=rps,
        ok_per_s=rps * ok / requests if requests else 0.0,
        p50_ms=ms(need(r"\s50%\s+" + _TIME)),
        p90_ms=ms(need(r"\s90%\s+" + _TIME)),
        p99_ms=ms(need(r"\s99%\s+" + _TIME)),
        max_ms=ms(need(r"Latency\s+" + _TIME + r"\s+" + _TIME + r"\s+" + _TIME), 5),
        requests=requests,
        seconds=seconds,
        non_2xx=non_2xx,
        socket_errors=socket_errors,
    )
