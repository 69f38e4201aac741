"""Real `celery worker` and `celery beat` subprocesses for the crash and routing tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for

CELERY = str(Path(sys.executable).with_name("celery"))


class Process:
    """A subprocess in its own process group, with its output in a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "LOG_JSON": "false", **(env or {})},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole group: the main process and every pool process at once."""
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill_group()
        self._log.close()


@contextmanager
def celery_worker(
    tmp_path: Path,
    name: str,
    queue: str,
    concurrency: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[Process]:
    """A prefork worker consuming only `queue`, ready when it says so (`env` overrides the
    tests' environment, e.g. to use another broker)."""
    process = Process(
        [
            CELERY,
            "-A",
            "shared.celery_app",
            "worker",
            "-Q",
            queue,
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "-n",
            f"{name}@localhost",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ],
        tmp_path / f"{name}.log",
        env,
    )
    try:
        wait_for(
            lambda: " ready." in process.log() or process.popen.poll() is not None,
            timeout=60,
            message=f"worker {name} to start",
        )
        assert process.popen.poll() is None, process.log()
        yield process
    finally:
        process.stop()


@contextmanager
def celery_beat(tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[Process]:
    process = Process(
        [
            CELERY,
            "-A",
            "shared.celery_app",
            "beat",
            "--loglevel=INFO",
            "-s",
            str(tmp_path / "beat-schedule"),
        ],
        tmp_path / "beat.log",
        env,
    )
    try:
        wait_for(
            lambda: "beat: Starting" in process.log() or process.popen.poll() is not None,
            timeout=60,
            message="beat to start",
        )
        yield process
    finally:
        process.stop()


@contextmanager
def flower(tmp_path: Path, port: int, basic_auth: str) -> Iterator[Process]:
    """Flower on the tests' broker, with basic auth from the environment as `make run` does."""
    os.environ["FLOWER_BASIC_AUTH"] = basic_auth
    try:
        process = Process(
            [
                CELERY,
                "-A",
                "shared.celery_app",
                "flower",
                "--address=127.0.0.1",
                f"--port={port}",
                f"--db={tmp_path / 'flower.db'}",
            ],
            tmp_path / "flower.log",
        )
    finally:
        del os.environ["FLOWER_BASIC_AUTH"]
    try:
        yield process
    finally:
        process.stop()


@contextmanager
def deploy_fleet(
    github: Any,
    directory: Path,
    name: str,
    ports: tuple[int, int],
    concurrency: int,
    **settings: str,
) -> Iterator[Process]:
    """A deploy worker cloning from the local GitHub stand-in (`github`, a FakeGitHub) and
    leasing ports from its own range; `settings` are more DEPLOY_* variables. Set in this
    process's environment too, as the API's checks read them."""
    env = {
        "GIT_CONFIG_GLOBAL": str(github.gitconfig),
        "DEPLOY_GIT_PROTOCOLS": "https,file",  # file: the stand-in for GitHub
        "DEPLOY_PORT_RANGE": f"{ports[0]}-{ports[1]}",
        **settings,
    }
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in env.items():
            patch.setenv(variable, value)
        with celery_worker(directory, name, "deploy", concurrency) as worker:
            yield worker
