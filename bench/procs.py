"""Servers and workers the bench starts: own process groups, readiness polled, always stopped.

Each child runs in a new session (its own process group), so a Ctrl-C in the terminal reaches
only the bench, which then stops every group it started from `finally` blocks; prefork
children and gunicorn workers go with their parent's group. An atexit hook is the backstop
for anything still running when the interpreter leaves.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import requests
from celery import Celery

from bench.env import BROKER_URL, LOG_DIR, ROOT

VENV_BIN = Path(sys.executable).parent
# One gunicorn configuration for every server in the bench, platform and baseline alike.
GUNICORN_ARGS = ["--workers", "4", "--threads", "4", "--log-level", "warning"]
WORKER_CONCURRENCY = 2
READY_TIMEOUT = 60.0
STOP_GRACE = 10.0

_live: dict[int, subprocess.Popen[bytes]] = {}


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.1,
    failed: Callable[[], str | None] | None = None,
) -> None:
    """Poll `condition` until true; raise TimeoutError after `timeout` seconds, or
    RuntimeError as soon as `failed` names a reason to stop waiting."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if failed is not None and (reason := failed()):
            raise RuntimeError(f"while waiting for {what}: {reason}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _exited(pid: int) -> bool:
    """True once the child has exited, without reaping it.

    An unreaped (zombie) leader keeps its process-group id reserved, so signalling the group
    afterwards can never hit an unrelated process that reused the number.
    """
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _stop(popen: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM the group, give it `grace` seconds, then SIGKILL whatever is left and reap."""
    pid = popen.pid
    if not _exited(pid):
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not _exited(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    _signal_group(pid, signal.SIGKILL)  # stragglers: pool children, a stuck leader
    with suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=5)
    _live.pop(pid, None)


@atexit.register
def _stop_all() -> None:
    for popen in list(_live.values()):
        _stop(popen, grace=2.0)


@dataclass(frozen=True)
class Service:
    name: str
    pid: int
    log_path: Path

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def service(
    name: str, args: list[str], ready: Callable[[], bool], timeout: float = READY_TIMEOUT
) -> Iterator[Service]:
    """Run `args` as `name` (output in var/bench/NAME.log) until the block ends."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=dict(os.environ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _live[popen.pid] = popen
    handle = Service(name, popen.pid, log_path)
    try:
        wait_until(
            ready,
            timeout,
            f"{name} to be ready",
            interval=0.2,
            failed=lambda: (
                f"{name} exited early:\n{handle.log_tail()}" if _exited(popen.pid) else None
            ),
        )
        yield handle
    finally:
        _stop(popen)


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    return check


def gunicorn(name: str, app: str, port: int) -> AbstractContextManager[Service]:
    """A gunicorn server with the bench's one configuration, ready when /healthz answers."""
    # Refuse a port someone else serves: its /healthz could pass for ours and be measured.
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(f"port {port} is already in use; stop whatever listens there")
    return service(
        name,
        [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", *GUNICORN_ARGS, app],
        http_ok(f"http://127.0.0.1:{port}/healthz"),
    )


def celery_worker(
    name: str, app: str, queue: str, node: str, concurrency: int = WORKER_CONCURRENCY
) -> AbstractContextManager[Service]:
    """A prefork worker on `queue`, ready when it answers a control ping.

    A ping proves the consumer is connected to the broker, which a log line does not (and at
    --loglevel=WARNING there is none to wait for). Task events on (`-E`), as Flower needs
    them: the platform's configuration turns them on anyway, raw Celery pays for them too.
    """
    nodename = f"{node}@{socket.gethostname()}"
    control = Celery("bench_control", broker=BROKER_URL)

    def answers() -> bool:
        try:
            return bool(control.control.ping(destination=[nodename], timeout=0.5))
        except Exception:  # the broker connection itself is retried on the next poll
            return False

    return service(
        name,
        [
            str(VENV_BIN / "celery"),
            "-A",
            app,
            "worker",
            "-Q",
            queue,
            "-c",
            str(concurrency),
            "-E",
            "-n",
            f"{node}@%h",
            "--loglevel=WARNING",
        ],
        answers,
    )


def celery_beat(name: str) -> AbstractContextManager[Service]:
    """Celery beat with the platform's schedule, ready once it has written its schedule file
    (its log is quiet at the bench's LOG_LEVEL; the compose stack's health check looks at
    the same file)."""
    schedule = LOG_DIR / f"{name}-schedule"
    for old in LOG_DIR.glob(f"{schedule.name}*"):
        old.unlink()

    def started() -> bool:
        return any(path.stat().st_size for path in LOG_DIR.glob(f"{schedule.name}*"))

    return service(
        name,
        [str(VENV_BIN / "celery"), "-A", "shared.celery_app", "beat",
         "--loglevel=INFO", "-s", str(schedule)],
        started,
    )  # fmt: skip
