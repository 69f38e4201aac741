"""gunicorn settings for the API's multi-process metrics (`gunicorn -c python:api.gunicorn_conf`).

With several gunicorn workers, each process keeps its own request-latency histogram, so one
scrape of /metrics would show whichever worker answered it. With PROMETHEUS_MULTIPROC_DIR
set, prometheus_client writes every worker's samples to files there and /metrics merges
them; the directory must start empty (stale files from an earlier run would be counted) and
a dead worker's live gauges must be dropped.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

# gunicorn answers a request line over 4094 bytes itself, with a plain-text 400 outside the
# API's error shape and OpenAPI document. 8190 is the highest finite value gunicorn takes;
# every parameter the document declares is bounded so that a conforming request fits.
limit_request_line = 8190


def _metrics_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def on_starting(_server: Any) -> None:
    path = _metrics_dir()
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)


def child_exit(_server: Any, worker: Any) -> None:
    if _metrics_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
