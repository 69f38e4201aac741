"""File jobs: N `file.checksum` jobs on a small file through the API vs the same work done
by N plain `docker run` commands of the same image, with the same parallelism, in one run.

The platform side is everything a user gets: multipart upload to storage, the job row, the
queue, a `files` worker (concurrency P) running each job in a fresh locked-down container with
the input copied in and the result copied out and stored, and the poll that sees them all
succeed. The baseline is `docker run --rm` of the processor image with the file bind-mounted,
P at a time. Docker's own container start and removal dominate both.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import procs
from bench.client import ApiClient
from bench.core import Comparison, Context, env_int
from bench.e2e import _all_succeeded, _poll_until
from bench.env import flush_redis

NAME = "files"
PORT = 8102
WARMUP = 2
PARAMS = {"algorithms": ["sha256"]}


def _image() -> str:
    return os.environ.get("PROCESSOR_IMAGE", "dockyard/processors:latest")


def raw_docker(n: int, parallelism: int, sample: Path) -> float:
    """N `docker run` of the processor on the sample, P at a time; returns seconds."""
    command = [
        "docker", "run", "--rm", "--network", "none",
        "-v", f"{sample.parent}:/work/in:ro",
        "-e", 'DOCKYARD_PARAMS={"algorithms": ["sha256"]}',
        _image(), "file.checksum", f"/work/in/{sample.name}", "/tmp/out",
    ]  # fmt: skip

    def one(_: int) -> None:
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    with ThreadPoolExecutor(parallelism) as pool:
        list(pool.map(one, range(WARMUP)))
        started = time.perf_counter()
        list(pool.map(one, range(n)))
        return time.perf_counter() - started


def platform(n: int, parallelism: int, data: bytes) -> float:
    base = f"http://127.0.0.1:{PORT}"
    with ExitStack() as stack:
        stack.enter_context(procs.gunicorn("files-api", "api.wsgi:app", PORT))
        stack.enter_context(
            procs.celery_worker("files-worker", "shared.celery_app", "files", "bench-files")
        )
        warm = ApiClient.new_user(base)
        stack.callback(warm.close)
        for _ in range(WARMUP):
            warm.submit_file("file.checksum", data, PARAMS)
        _poll_until(lambda: _all_succeeded(warm, WARMUP), 120, "warm-up file jobs")

        poller = ApiClient.new_user(base)
        stack.callback(poller.close)
        started = time.perf_counter()

        def submit(_: int) -> str:
            client = ApiClient(base, poller.token)
            try:
                return client.submit_file("file.checksum", data, PARAMS)
            finally:
                client.close()

        with ThreadPoolExecutor(parallelism) as pool:
            list(pool.map(submit, range(n)))
        finished = _poll_until(lambda: _all_succeeded(poller, n), 60 + n * 10, "file jobs")
    return finished - started


def run(ctx: Context) -> list[Comparison]:
    n = env_int("BENCH_FILE_JOBS", 50)
    parallelism = procs.WORKER_CONCURRENCY
    data = b"dockyard bench file\n" * 200  # 4 KB
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as scratch:
        sample = Path(scratch) / "sample.txt"
        sample.write_bytes(data)
        sample.parent.chmod(0o755)
        sample.chmod(0o644)
        print(f"[files] raw: {n} `docker run` of {_image()}, {parallelism} at a time", flush=True)
        raw = raw_docker(n, parallelism, sample)
    print(f"[files]   {raw:.2f}s ({n / raw:.2f} runs/s)", flush=True)
    print(f"[files] platform: {n} file.checksum jobs, files worker -c {parallelism}", flush=True)
    ours = platform(n, parallelism, data)
    flush_redis()
    print(f"[files]   {ours:.2f}s ({n / ours:.2f} jobs/s)", flush=True)
    details: dict[str, Any] = {
        "n": n,
        "parallelism": parallelism,
        "file_bytes": len(data),
        "raw_docker_seconds": round(raw, 3),
        "platform_seconds": round(ours, 3),
    }
    return [
        Comparison(
            bench=NAME,
            measure=f"{n} file.checksum jobs",
            unit="s",
            baseline_name="docker run",
            baseline=raw,
            platform=ours,
            target_op="<=",
            target=1.3,
            details=details,
        )
    ]
