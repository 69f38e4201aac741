"""Running one delivery of a job: claim it, run its processor, record the outcome.

Every write is guarded by the job's current `dispatch_id`. A delivery whose dispatch id is no
longer current (a retry or a sweep superseded it, or it was cancelled) is dropped, so one job
never runs twice at once even when the broker delivers a message twice.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from shared.clock import now
from shared.config import Settings
from shared.db import session_scope
from shared.dispatch import queue_states
from shared.dispatch.publish import delivered
from shared.errors import JobCancelled, JobError, RetryableJobError
from shared.jobs import events, transitions
from shared.jobs.fast_transitions import try_start, try_succeed
from shared.jobs.status import JobStatus
from shared.jobs.transitions import Effects
from shared.models import Job
from shared.processors import Processor, get_processor
from workers import families  # noqa: F401  (registers the executors of every job family)
from workers.executors import executor_for

log = logging.getLogger(__name__)


class JobSuperseded(Exception):
    """This delivery is no longer the job's current one; stop without writing anything."""


@dataclass(frozen=True)
class Delivery:
    job_id: uuid.UUID
    dispatch_id: uuid.UUID
    task_name: str
    hostname: str
    pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True)
class Claim:
    job_id: uuid.UUID
    dispatch_id: uuid.UUID
    processor: str
    params: dict[str, Any]
    attempt: int
    waited: float | None = None  # seconds from submit to this claim


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _locked_job(session: Session, job_id: uuid.UUID) -> Job | None:
    return session.get(Job, job_id, with_for_update=True, populate_existing=True)


def claim(delivery: Delivery, settings: Settings) -> Claim | None:
    """Mark the job running for this delivery, or return None when it must be dropped."""
    fast = try_start(delivery.job_id, delivery.dispatch_id, delivery.hostname, delivery.pid)
    if fast is not None:
        processor, params, attempt, waited = fast
        return Claim(
            delivery.job_id, delivery.dispatch_id, processor, dict(params), attempt, waited
        )
    claimed, effects = _claim_locked(delivery)
    if effects is not None:
        effects.send()
        effects.count(settings.redis_url)
    return claimed


def _claim_locked(delivery: Delivery) -> tuple[Claim | None, Effects | None]:
    """The general path: lock the row and decide, for whatever the fast path did not match
    (a redelivery after a pool process died, a cancel asked before the start, a job whose
    queue is paused)."""
    with session_scope() as session:
        # try_start already waited for any in-flight submit of this job to commit.
        job = _locked_job(session, delivery.job_id)
        reason = _drop_reason(job, delivery)
        if reason is None and _held_back(session, job):
            assert job is not None
            log.info(
                "delivery held: the job's queue is paused",
                extra={"event": "delivery_held", "queue": job.queue},
            )
            return None, transitions.hold(session, job)
        if reason is not None:
            log.info(
                "delivery dropped: %s",
                reason,
                extra={
                    "event": "delivery_dropped",
                    "reason": reason,
                    "dispatch_id": str(delivery.dispatch_id),
                },
            )
            return None, None
        assert job is not None
        lost: Effects | None = None
        if job.status == JobStatus.RUNNING.value:
            # Same worker node, and the pool process that held this delivery is gone: the
            # broker gave the message back (task_reject_on_worker_lost). That attempt is over.
            outcome, lost = transitions.worker_lost(
                session, job, delivery.task_name, pid=job.worker_pid
            )
            if outcome != "again":
                return None, lost
        elif job.cancel_requested:
            return None, transitions.finish_cancelled(session, job)
        transitions.start(session, job, delivery.hostname, delivery.pid)
        waited = (now() - job.created_at).total_seconds()
        claimed = Claim(
            job.id, delivery.dispatch_id, job.processor, dict(job.params), job.attempts, waited
        )
    return claimed, lost


def _held_back(session: Session, job: Job | None) -> bool:
    """A job not started yet whose queue is paused: it waits, unpublished, for the resume
    (shared/dispatch/queue_states.py); a running job's redelivery still finishes its attempt."""
    return (
        job is not None
        and job.status in (JobStatus.QUEUED.value, JobStatus.RETRYING.value)
        and queue_states.is_paused(session, job.queue)
    )


def _drop_reason(job: Job | None, delivery: Delivery) -> str | None:
    if job is None:
        return "job does not exist"
    if job.dispatch_id != delivery.dispatch_id:
        return "superseded by a newer delivery"
    status = JobStatus(job.status)
    if status in (JobStatus.QUEUED, JobStatus.RETRYING):
        return None
    if status is JobStatus.RUNNING:
        if job.worker_host == delivery.hostname and not pid_alive(job.worker_pid):
            return None
        return "already running; the heartbeat sweep recovers it if its worker died"
    return f"job is already {status.value}"


class RunningJob:
    """The JobContext handed to processors, bound to one claimed delivery."""

    def __init__(self, claim_: Claim) -> None:
        self.job_id = str(claim_.job_id)
        self.attempt = claim_.attempt
        self._claim = claim_

    def progress(self, current: int, total: int, message: str = "") -> None:
        with session_scope() as session:
            row = session.execute(
                update(Job)
                .where(
                    Job.id == self._claim.job_id,
                    Job.dispatch_id == self._claim.dispatch_id,
                    Job.status == JobStatus.RUNNING.value,
                )
                .values(
                    progress_current=current,
                    progress_total=total,
                    progress_message=message[:500],
                    heartbeat_at=now(),
                )
                .returning(Job.cancel_requested)
            ).first()
            if row is None:
                raise JobSuperseded()
            events.record(
                session,
                self._claim.job_id,
                events.PROGRESS,
                attempt=self.attempt,
                current=current,
                total=total,
                message=message,
            )
        if row.cancel_requested:
            raise JobCancelled()


class Heartbeat:
    """Touches `heartbeat_at` while the job runs, so the sweep can tell a dead worker."""

    def __init__(self, claim_: Claim, interval: float) -> None:
        self._claim = claim_
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="dockyard-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with session_scope() as session:
                    session.execute(
                        update(Job)
                        .where(
                            Job.id == self._claim.job_id,
                            Job.dispatch_id == self._claim.dispatch_id,
                            Job.status == JobStatus.RUNNING.value,
                        )
                        .values(heartbeat_at=now())
                    )
            except Exception:
                log.warning("heartbeat failed", exc_info=True, extra={"event": "heartbeat_failed"})


def execute(
    context: RunningJob, processor: Processor | None, claimed: Claim, settings: Settings
) -> dict[str, Any]:
    """Run the work itself, the way the processor's kind does (workers/executors.py)."""
    if processor is None:
        raise JobError("unknown_processor", f"No runnable processor {claimed.processor!r}.")
    run = executor_for(processor.kind).run
    return run(context, processor, claimed.params, claimed.dispatch_id, settings)


def run_delivery(delivery: Delivery, settings: Settings) -> dict[str, Any]:
    """Claim, run and record one delivery. Returns a small summary (no result row is kept
    for job tasks; Flower shows it from the task-succeeded event)."""
    claimed = claim(delivery, settings)
    if claimed is None:
        return {"job_id": str(delivery.job_id), "outcome": "dropped"}
    delivered(delivery.dispatch_id)
    processor = get_processor(claimed.processor)
    started = time.monotonic()
    summary, effects = _run_claimed(delivery, claimed, processor, settings)
    if processor is not None:
        after_outcome(processor.kind, claimed.job_id, summary["outcome"], settings)
    if effects is not None:
        waited = claimed.waited if claimed.attempt == 1 else None
        effects.count(settings.redis_url, time.monotonic() - started, waited)
    return summary


def after_outcome(kind: str, job_id: uuid.UUID, outcome: str, settings: Settings) -> None:
    """What a kind of job leaves behind once an outcome is recorded (its executor decides;
    the periodic sweeps catch whatever this misses, a crash right here)."""
    executor_for(kind).after_outcome(job_id, outcome, settings)


Summary = dict[str, Any]


def _run_claimed(
    delivery: Delivery, claimed: Claim, processor: Processor | None, settings: Settings
) -> tuple[Summary, Effects | None]:
    context = RunningJob(claimed)
    try:
        with Heartbeat(claimed, settings.heartbeat_interval):
            result = execute(context, processor, claimed, settings)
    except JobSuperseded:
        log.info(
            "delivery superseded while running; outcome discarded",
            extra={"event": "delivery_superseded"},
        )
        return {"job_id": str(delivery.job_id), "outcome": "superseded"}, None
    except JobCancelled:
        return _record(delivery, claimed, settings, cancelled=True)
    except JobError as error:
        return _record(delivery, claimed, settings, error=error, tb=traceback.format_exc())
    except Exception as unexpected:  # a bug or a dependency: retried, then dead-lettered
        log.exception("processor raised unexpectedly", extra={"event": "processor_crashed"})
        retryable = RetryableJobError(
            "unexpected_error", f"{type(unexpected).__name__}: {unexpected}"
        )
        return _record(delivery, claimed, settings, error=retryable, tb=traceback.format_exc())
    return _record(delivery, claimed, settings, result=result)


def _record(
    delivery: Delivery,
    claimed: Claim,
    settings: Settings,
    *,
    result: dict[str, Any] | None = None,
    error: JobError | None = None,
    tb: str | None = None,
    cancelled: bool = False,
) -> tuple[Summary, Effects | None]:
    """Write the attempt's outcome (the fast statement for a plain success), then send what
    it leaves to send. Metrics are the caller's: it knows how long the attempt took."""
    summary = {"job_id": str(claimed.job_id), "outcome": "superseded", "attempt": claimed.attempt}
    effects: Effects | None = None
    if not cancelled and error is None:
        effects = try_succeed(claimed.job_id, claimed.dispatch_id, result or {})
    if effects is None:
        with session_scope() as session:
            job = _locked_job(session, claimed.job_id)
            if (
                job is None
                or job.dispatch_id != claimed.dispatch_id
                or job.status != JobStatus.RUNNING.value
            ):
                log.info(
                    "outcome discarded: the delivery was superseded",
                    extra={"event": "delivery_superseded"},
                )
                return summary, None
            if cancelled:
                effects = transitions.finish_cancelled(session, job)
            elif error is None:
                effects = transitions.succeed(session, job, result or {})
            else:
                _, effects = transitions.attempt_failed(
                    session, job, error, delivery.task_name, settings, tb
                )
            summary["outcome"] = job.status
        effects.send()
    else:
        summary["outcome"] = JobStatus.SUCCEEDED.value
    log.info(
        "job attempt ended: %s",
        summary["outcome"],
        extra={"event": "attempt_ended", "outcome": summary["outcome"], "attempt": claimed.attempt},
    )
    return summary, effects
