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
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from shared import events, metrics
from shared.backoff import retry_delay
from shared.config import Settings
from shared.db import session_scope
from shared.dispatch import Dispatch, delivered, publish_job
from shared.errors import JobCancelled, JobError, RetryableJobError
from shared.jobs import now, set_status
from shared.models import Job
from shared.processors import Processor, get_processor
from shared.status import JobStatus
from workers import families  # noqa: F401  (registers the executors of every job family)
from workers.dead_letters import dead_letter_payload, send_dead_letter
from workers.executors import executor_for
from workers.fast_path import try_claim, try_succeed

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


@dataclass
class AfterCommit:
    """Messages to send once the transaction that decided them has committed."""

    dispatch: Dispatch | None = None
    dead_letter: dict[str, Any] | None = None

    def send(self) -> None:
        if self.dispatch is not None:
            publish_job(self.dispatch)
        if self.dead_letter is not None:
            send_dead_letter(self.dead_letter)


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
    fast = try_claim(delivery.job_id, delivery.dispatch_id, delivery.hostname, delivery.pid)
    if fast is not None:
        processor, params, attempt, waited = fast
        return Claim(
            delivery.job_id, delivery.dispatch_id, processor, dict(params), attempt, waited
        )
    after = AfterCommit()
    with session_scope() as session:
        # try_claim already waited for any in-flight submit of this job to commit.
        job = _locked_job(session, delivery.job_id)
        reason = _drop_reason(job, delivery)
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
            return None
        assert job is not None
        if job.status == JobStatus.RUNNING.value:
            # Same worker node, and the pool process that held this delivery is gone: the
            # broker gave the message back (task_reject_on_worker_lost). That attempt is over.
            events.record(
                session,
                job.id,
                events.WORKER_LOST,
                attempt=job.attempts,
                worker=job.worker_host,
                pid=job.worker_pid,
            )
            if job.cancel_requested:
                finish_cancelled(session, job)
                return None
            if job.attempts >= job.max_attempts:
                job.error_code, job.error_message = (
                    "worker_lost",
                    "The worker running the job died.",
                )
                after = dead_letter_job(session, job, delivery.task_name, None)
        elif job.cancel_requested:
            finish_cancelled(session, job)
            return None
        if after.dead_letter is None:
            set_status(job, JobStatus.RUNNING)
            job.attempts += 1
            job.started_at = job.started_at or now()
            job.heartbeat_at = now()
            job.next_attempt_at = None
            job.worker_host = delivery.hostname
            job.worker_pid = delivery.pid
            job.progress_current = job.progress_total = None
            job.progress_message = None
            events.record(
                session, job.id, events.STARTED, attempt=job.attempts, worker=delivery.hostname
            )
            result = Claim(
                job.id,
                delivery.dispatch_id,
                job.processor,
                dict(job.params),
                job.attempts,
                (now() - job.created_at).total_seconds(),
            )
    if after.dead_letter is not None:
        after.send()
        return None
    return result


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
    """Claim, run and record one delivery. Returns a small summary for the result backend."""
    claimed = claim(delivery, settings)
    if claimed is None:
        return {"job_id": str(delivery.job_id), "outcome": "dropped"}
    delivered(delivery.dispatch_id)
    processor = get_processor(claimed.processor)
    started = time.monotonic()
    summary = _run_claimed(delivery, claimed, processor, settings)
    if processor is not None:
        after_outcome(processor.kind, claimed.job_id, summary["outcome"], settings)
        _count(processor, claimed, summary["outcome"], time.monotonic() - started, settings)
    return summary


def _count(
    processor: Processor, claimed: Claim, outcome: str, seconds: float, settings: Settings
) -> None:
    waited = claimed.waited if claimed.attempt == 1 else None
    if outcome in ("succeeded", "failed", "dead", "cancelled"):
        metrics.job_ended(
            settings.redis_url, processor.kind, processor.name, outcome, seconds, waited
        )
    elif outcome == "retrying":
        metrics.attempt_observed(
            settings.redis_url, processor.kind, processor.name, seconds, waited
        )


def after_outcome(kind: str, job_id: uuid.UUID, outcome: str, settings: Settings) -> None:
    """What a kind of job leaves behind once an outcome is recorded (its executor decides;
    the periodic sweeps catch whatever this misses, a crash right here)."""
    executor_for(kind).after_outcome(job_id, outcome, settings)


def _run_claimed(
    delivery: Delivery, claimed: Claim, processor: Processor | None, settings: Settings
) -> dict[str, Any]:
    context = RunningJob(claimed)
    try:
        with Heartbeat(claimed, settings.heartbeat_interval):
            result = execute(context, processor, claimed, settings)
    except JobSuperseded:
        log.info(
            "delivery superseded while running; outcome discarded",
            extra={"event": "delivery_superseded"},
        )
        return {"job_id": str(delivery.job_id), "outcome": "superseded"}
    except JobCancelled:
        return _record(delivery, claimed, settings, cancelled=True)
    except JobError as error:
        return _record(delivery, claimed, settings, error=error, tb=traceback.format_exc())
    except Exception as unexpected:  # a bug or a dependency: retried, then dead-lettered
        log.exception("processor raised unexpectedly", extra={"event": "processor_crashed"})
        error = RetryableJobError("unexpected_error", f"{type(unexpected).__name__}: {unexpected}")
        return _record(delivery, claimed, settings, error=error, tb=traceback.format_exc())
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
) -> dict[str, Any]:
    if (
        not cancelled
        and error is None
        and try_succeed(claimed.job_id, claimed.dispatch_id, result or {})
    ):
        log.info(
            "job attempt ended: succeeded",
            extra={"event": "attempt_ended", "outcome": "succeeded", "attempt": claimed.attempt},
        )
        return {"job_id": str(claimed.job_id), "outcome": "succeeded", "attempt": claimed.attempt}
    after = AfterCommit()
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
            return {"job_id": str(claimed.job_id), "outcome": "superseded"}
        if cancelled:
            finish_cancelled(session, job)
            outcome = "cancelled"
        elif error is None:
            set_status(job, JobStatus.SUCCEEDED)
            job.result = result or {}
            job.error_code = job.error_message = None
            job.finished_at = now()
            events.record(session, job.id, events.SUCCEEDED, attempt=job.attempts)
            outcome = "succeeded"
        else:
            outcome, after = _failed_attempt(session, job, error, tb, delivery.task_name, settings)
    after.send()
    log.info(
        "job attempt ended: %s",
        outcome,
        extra={"event": "attempt_ended", "outcome": outcome, "attempt": claimed.attempt},
    )
    return {"job_id": str(claimed.job_id), "outcome": outcome, "attempt": claimed.attempt}


def _failed_attempt(
    session: Session,
    job: Job,
    error: JobError,
    tb: str | None,
    task_name: str,
    settings: Settings,
) -> tuple[str, AfterCommit]:
    job.error_code, job.error_message = error.code, error.message
    events.record(
        session,
        job.id,
        events.ATTEMPT_FAILED,
        attempt=job.attempts,
        error={"code": error.code, "message": error.message},
        retryable=error.retryable,
    )
    if not error.retryable:
        set_status(job, JobStatus.FAILED)
        job.finished_at = now()
        events.record(
            session,
            job.id,
            events.FAILED,
            attempt=job.attempts,
            error={"code": error.code, "message": error.message},
        )
        return "failed", AfterCommit()
    if job.attempts < job.max_attempts:
        return "retrying", schedule_retry(session, job, task_name, settings)
    return "dead", dead_letter_job(session, job, task_name, tb)


def schedule_retry(
    session: Session,
    job: Job,
    task_name: str,
    settings: Settings,
    delay: float | None = None,
    reason: str = "retryable_error",
) -> AfterCommit:
    """Move the job to `retrying` under a new dispatch id; the message follows the commit,
    published to the job's own queue (never Celery's default queue)."""
    if delay is None:
        delay = retry_delay(
            job.attempts,
            settings.retry_backoff_base,
            settings.retry_backoff_max,
            settings.retry_jitter,
        )
    set_status(job, JobStatus.RETRYING)
    job.dispatch_id = uuid.uuid4()
    job.published_at = None
    job.next_attempt_at = now() + timedelta(seconds=delay)
    events.record(
        session,
        job.id,
        events.RETRY_SCHEDULED,
        attempt=job.attempts,
        delay=round(delay, 3),
        next_attempt=job.attempts + 1,
        queue=job.queue,
        reason=reason,
    )
    return AfterCommit(dispatch=Dispatch.for_job(job, task_name, countdown=delay or None))


def dead_letter_job(session: Session, job: Job, task_name: str, tb: str | None) -> AfterCommit:
    set_status(job, JobStatus.DEAD)
    job.finished_at = now()
    events.record(
        session,
        job.id,
        events.DEAD_LETTERED,
        attempt=job.attempts,
        error={"code": job.error_code, "message": job.error_message},
    )
    return AfterCommit(dead_letter=dead_letter_payload(job, task_name, tb, job.finished_at))


def finish_cancelled(session: Session, job: Job) -> None:
    set_status(job, JobStatus.CANCELLED)
    job.finished_at = now()
    job.result = None
    events.record(session, job.id, events.CANCELLED, attempt=job.attempts)
