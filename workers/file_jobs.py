"""Running one attempt of a file job: storage -> locked-down container -> storage.

Failures are sorted by who can fix them: storage or the Docker engine unreachable is
retryable (the attempt is retried with backoff, then dead-lettered); the processor refusing
the input, a timeout, an output over its limit or a processor crash is permanent (retrying
would only repeat it).
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from shared.clock import now
from shared.config import Settings
from shared.db import session_scope
from shared.errors import JobCancelled, PermanentJobError, RetryableJobError
from shared.jobs.status import JobStatus
from shared.models import Job, JobLog
from shared.processors import JobContext, Limits, Processor
from shared.storage import Storage, build_storage
from shared.storage.base import StorageError, object_key
from workers import sandbox
from workers.executors import Executor, register_executor

log = logging.getLogger(__name__)

INPUT_DIR = f"{sandbox.WORKDIR}/in"
OUTPUT_DIR = f"{sandbox.WORKDIR}/out"
EXIT_REJECTED = 2
_CANCEL_CHECK_SECONDS = 0.5
#: Jobs whose input is deleted as soon as they end. A dead job keeps its input until the
#: retention sweep: operators requeue dead letters once the failing dependency is back.
INPUT_DELETED_ON = frozenset(
    {JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value}
)


@lru_cache(maxsize=4)
def worker_storage(settings: Settings) -> Storage:
    return build_storage(settings)


class CancelWatch:
    """Answers "was this attempt cancelled or superseded?", asking the database at most
    every half second: frequent enough to kill a container within 2 s of a cancel."""

    def __init__(self, job_id: uuid.UUID, dispatch_id: uuid.UUID) -> None:
        self._job_id = job_id
        self._dispatch_id = dispatch_id
        self._checked = 0.0
        self._answer = False

    def __call__(self) -> bool:
        if self._answer or time.monotonic() - self._checked < _CANCEL_CHECK_SECONDS:
            return self._answer
        self._checked = time.monotonic()
        with session_scope() as session:
            row = session.execute(
                select(Job.cancel_requested, Job.dispatch_id, Job.status).where(
                    Job.id == self._job_id
                )
            ).first()
        self._answer = (
            row is None
            or row.cancel_requested
            or row.dispatch_id != self._dispatch_id
            or row.status != JobStatus.RUNNING.value
        )
        return self._answer


def save_log(job_id: uuid.UUID, attempt: int, source: str, text: str, truncated: bool) -> None:
    """Keep an attempt's output as the job's log (best effort: never fails the attempt)."""
    try:
        with session_scope() as session:
            session.add(
                JobLog(
                    job_id=job_id,
                    attempt=attempt,
                    source=source,
                    content=text.replace("\x00", ""),
                    truncated=truncated,
                )
            )
    except Exception:
        log.warning("could not save the job's log", exc_info=True, extra={"event": "log_lost"})


def _fetch_input(storage: Storage, key: str, directory: Path, filename: str) -> Path:
    path = directory / filename
    try:
        with path.open("wb") as handle:
            for chunk in storage.open(key):
                handle.write(chunk)
    except StorageError as error:
        raise RetryableJobError("storage_error", f"Cannot read the input: {error}") from error
    return path


def _tail(text: str, lines: int = 10) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


#: 128 + SIGKILL, 128 + SIGTERM: the statuses Docker reports for a stopped container.
STOPPED_FROM_OUTSIDE = frozenset({137, 143})


def _check_exit(run: sandbox.SandboxRun, limits: Limits) -> None:
    if run.exit_code == 0:
        return
    if run.exit_code == EXIT_REJECTED:
        raise PermanentJobError(
            "input_rejected", f"The processor rejected the input: {_tail(run.logs, 3)}"
        )
    if run.oom_killed:
        raise PermanentJobError(
            "memory_limit_exceeded",
            f"The processor used more than {limits.memory_bytes // (1024 * 1024)} MB of memory.",
        )
    if run.exit_code in STOPPED_FROM_OUTSIDE:
        # The sandbox kills only on cancel and timeout, which end the run before this; a
        # SIGTERM or SIGKILL without an OOM kill came from outside: the engine stopping its
        # containers for a restart, or an operator. The job is not at fault: try again.
        raise RetryableJobError(
            "container_stopped",
            f"The processor's container was stopped from outside (status {run.exit_code}).",
        )
    raise PermanentJobError(
        "processor_failed", f"The processor exited with status {run.exit_code}: {_tail(run.logs)}"
    )


def _result_file(run: sandbox.SandboxRun) -> tuple[dict[str, Any], bytes]:
    try:
        meta = json.loads(run.outputs["result.json"])
        data = run.outputs[meta["filename"]]
    except (KeyError, ValueError, TypeError) as error:
        raise PermanentJobError(
            "processor_failed", "The processor finished without a result file."
        ) from error
    return meta, data


def run_file_job(
    context: JobContext,
    processor: Processor,
    params: dict[str, Any],
    dispatch_id: uuid.UUID,
    settings: Settings,
) -> dict[str, Any]:
    """Run one attempt; returns the job's result (details of the output, no storage key)."""
    job_id = uuid.UUID(context.job_id)
    with session_scope() as session:
        job = session.execute(
            select(Job.owner_id, Job.input_file, Job.input_deleted_at).where(Job.id == job_id)
        ).one()
    if not job.input_file or job.input_deleted_at is not None:
        raise PermanentJobError("input_missing", "The job's input file is no longer stored.")
    storage = worker_storage(settings)
    limits = processor.limits or Limits()
    if limits.timeout_seconds > settings.file_job_timeout_max:
        limits = replace(limits, timeout_seconds=settings.file_job_timeout_max)
    image = processor.image or settings.processor_image
    filename = job.input_file["filename"]
    mapping = {"input": f"{INPUT_DIR}/{filename}", "output": OUTPUT_DIR}
    command = [part.format(**mapping) for part in processor.command]
    with tempfile.TemporaryDirectory(prefix="dockyard-") as scratch:
        source = _fetch_input(storage, job.input_file["key"], Path(scratch), filename)
        try:
            run = sandbox.run(
                sandbox.docker_client(),
                sandbox.ContainerSpec(
                    image,
                    command,
                    environment={"DOCKYARD_PARAMS": json.dumps(params)},
                    labels={
                        sandbox.LABEL_JOB: str(job_id),
                        sandbox.LABEL_ATTEMPT: str(context.attempt),
                    },
                    limits=limits,
                ),
                {filename: source},
                sandbox.Hooks(
                    cancelled=CancelWatch(job_id, dispatch_id),
                    on_progress=context.progress,
                    on_logs=lambda text, truncated: save_log(
                        job_id, context.attempt, "processor", text, truncated
                    ),
                ),
            )
        except sandbox.Cancelled as cancelled:
            raise JobCancelled() from cancelled
    _check_exit(run, limits)
    meta, data = _result_file(run)
    result_name = meta["filename"]
    content_type = meta.get("content_type") or "application/octet-stream"
    key = object_key(job.owner_id, job_id, "result", result_name)
    try:
        stored = storage.put(key, io.BytesIO(data), content_type)
    except StorageError as error:
        raise RetryableJobError("storage_error", f"Cannot store the result: {error}") from error
    described = {
        "key": stored.key,
        "filename": result_name,
        "content_type": content_type,
        "size": stored.size,
    }
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.dispatch_id == dispatch_id)
            .values(
                result_file=described,
                result_deleted_at=None,
                result_expires_at=now() + timedelta(seconds=settings.result_retention),
            )
        )
    return {
        "filename": result_name,
        "content_type": content_type,
        "size": stored.size,
        **meta.get("details", {}),
    }


def delete_input(job_id: uuid.UUID, settings: Settings) -> bool:
    """Remove an ended job's input from storage; False leaves it to the sweep."""
    with session_scope() as session:
        job = session.execute(
            select(Job.input_file, Job.input_deleted_at, Job.status).where(Job.id == job_id)
        ).first()
        if job is None or not job.input_file or job.input_deleted_at is not None:
            return True
        if job.status not in INPUT_DELETED_ON:
            return False
        try:
            worker_storage(settings).delete(job.input_file["key"])
        except StorageError:
            log.warning("input not deleted yet", exc_info=True, extra={"event": "input_kept"})
            return False
        session.execute(update(Job).where(Job.id == job_id).values(input_deleted_at=now()))
    return True


def _after_outcome(job_id: uuid.UUID, outcome: str, settings: Settings) -> None:
    """An input is deleted when its job ends; not when dead: an operator may requeue it."""
    if outcome in ("succeeded", "failed", "cancelled"):
        delete_input(job_id, settings)


register_executor("file", Executor(run=run_file_job, after_outcome=_after_outcome))
