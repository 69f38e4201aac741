"""The worker side of a job kind: how an attempt runs, and what an outcome leaves to tidy.

Each family registers its executor from its own module (`workers/families.py` lists those
modules); the runner asks `executor_for(kind)` and never branches on a kind's name. A kind
without an executor of its own runs its processor's `run` function in the worker process,
which is what the diagnostics do.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.config import Settings
from shared.errors import JobError
from shared.processors import JobContext, Processor

RunAttempt = Callable[[JobContext, Processor, dict[str, Any], uuid.UUID, Settings], dict[str, Any]]
AfterOutcome = Callable[[uuid.UUID, str, Settings], None]


def _in_process(
    context: JobContext,
    processor: Processor,
    params: dict[str, Any],
    _dispatch_id: uuid.UUID,
    _settings: Settings,
) -> dict[str, Any]:
    if processor.run is None:
        raise JobError("unknown_processor", f"No runnable processor {processor.name!r}.")
    return processor.run(context, params)


def _nothing(_job_id: uuid.UUID, _outcome: str, _settings: Settings) -> None:
    return None


@dataclass(frozen=True)
class Executor:
    """`run` does one attempt (raising JobError subclasses to fail it); `after_outcome` runs
    once an outcome (`succeeded`, `failed`, `retrying`, `dead`, `cancelled`) is committed."""

    run: RunAttempt = _in_process
    after_outcome: AfterOutcome = _nothing


_EXECUTORS: dict[str, Executor] = {}
IN_PROCESS = Executor()


def register_executor(kind: str, executor: Executor) -> Executor:
    if kind in _EXECUTORS:
        raise ValueError(f"executor for kind {kind!r} registered twice")
    _EXECUTORS[kind] = executor
    return executor


def executor_for(kind: str) -> Executor:
    return _EXECUTORS.get(kind, IN_PROCESS)
