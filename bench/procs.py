"""Subprocesses for the bench: own process groups, always killed, readiness awaited."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

VENV_BIN = Path(sys.executable).parent
LOG_DIR = Path("var/bench")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextmanager
def process(name: str, args: list[str], ready: Callable[[Path], bool]) -> Iterator[Path]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ)
        )
        try:
            wait_until(lambda: popen.poll() is None and ready(log_path), 90, name)
            yield log_path
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(popen.pid, sig)
                    popen.wait(timeout=15)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue


def log_contains(text: str) -> Callable[[Path], bool]:
    return lambda path: text in path.read_text(errors="replace")


def http_ok(url: str) -> Callable[[Path], bool]:
    def check(_: Path) -> bool:
        try:
            return requests.get(url, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    return check


GUNICORN_ARGS = os.environ.get(
    "BENCH_GUNICORN", "--workers 8 --threads 1 --log-level warning"
).split()


def gunicorn(name: str, app: str, port: int) -> contextmanager:
    return process(
        name,
        [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", *GUNICORN_ARGS, app],
        http_ok(f"http://127.0.0.1:{port}/healthz"),
    )


def celery_worker(name: str, app: str, queue: str, concurrency: int = 2) -> contextmanager:
    """A prefork worker, ready when it answers a control ping (logs may be quiet)."""
    import importlib

    module, _, attribute = app.partition(":")
    celery_app = getattr(importlib.import_module(module), attribute or "app")
    node = f"{name}@bench"

    def answers(_: Path) -> bool:
        return bool(celery_app.control.ping(destination=[node], timeout=0.5))

    return process(
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
            "-P",
            "prefork",
            "-n",
            node,
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        answers,
    )
