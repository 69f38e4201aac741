"""Job operations shared by the API and the maintenance tasks: submit, cancel, retry.

Each function works inside the caller's session and leaves committing and publishing
to the caller, so one request is one transaction.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import BigInteger, DateTime, column, func, select, text
from sqlalchemy.orm import Session

from shared import events
from shared.models import Job
from shared.processors import Processor
from shared.status import ACTIVE, RETRYABLE_BY_USER, JobStatus, check_transition

IDEMPOTENCY_WINDOW = timedelta(hours=24)


class JobConflict(Exception):
    """The job's current state does not allow the operation (HTTP 409)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NewJob(SimpleNamespace):
    """A just-inserted job row, read like a Job (attribute access)."""


@dataclass(frozen=True)
class SubmitResult:
    job: Job | NewJob
    created: bool


def now() -> datetime:
    return datetime.now(UTC)


def set_status(job: Job, target: JobStatus) -> None:
    """The only way code changes a loaded job's status: the state machine is checked."""
    check_transition(job.id, job.status, target)
    job.status = target.value


def count_active_jobs(session: Session, owner_id: uuid.UUID) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.owner_id == owner_id, Job.status.in_([s.value for s in ACTIVE]))
        )
        or 0
    )


def find_by_idempotency_key(session: Session, owner_id: uuid.UUID, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


# One statement inserts the job and its `submitted` event and takes the job's advisory lock
# (held until commit, see shared.dispatch.publish_new_job). `published_at` is set
# optimistically and cleared if the publish then fails. A keyed insert that collides with a
# concurrent one returns no row instead of aborting the transaction.
_INSERT_JOB = text("""
WITH lock AS (SELECT pg_advisory_xact_lock(:lock_key)),
job AS (
    INSERT INTO jobs (id, owner_id, kind, processor, queue, params, status, attempts,
        max_attempts, idempotency_key, request_id, dispatch_id, cancel_requested,
        input_file, published_at, created_at, updated_at)
    SELECT :id, :owner_id, :kind, :processor, :queue, CAST(:params AS jsonb), 'queued', 0,
        :max_attempts, :idempotency_key, :request_id, :dispatch_id, false,
        CAST(:input_file AS jsonb), now(), now(), now()
    FROM lock
    ON CONFLICT ON CONSTRAINT uq_jobs_owner_idempotency_key DO NOTHING
    RETURNING id, created_at, updated_at, published_at
), event AS (
    INSERT INTO job_events (job_id, type, attempt, data, created_at)
    SELECT id, 'submitted', NULL, CAST(:event AS jsonb), now() FROM job
    RETURNING id
)
SELECT job.created_at, job.updated_at, job.published_at,
    (SELECT id FROM event) AS submitted_event_id
FROM job
""").columns(  # typed result columns: SQLAlchemy then reuses the result metadata
    column("created_at", DateTime(timezone=True)),
    column("updated_at", DateTime(timezone=True)),
    column("published_at", DateTime(timezone=True)),
    column("submitted_event_id", BigInteger),
)
# What a just-inserted job holds besides the values the insert was given: only the
# timestamps above come from the database. Returning and parsing every column instead
# cost about a tenth of a submit's CPU.
_NEW_JOB_DEFAULTS: dict[str, Any] = {
    "status": JobStatus.QUEUED.value,
    "attempts": 0,
    "progress_current": None,
    "progress_total": None,
    "progress_message": None,
    "error_code": None,
    "error_message": None,
    "result": None,
    "next_attempt_at": None,
    "heartbeat_at": None,
    "worker_host": None,
    "worker_pid": None,
    "cancel_requested": False,
    "input_deleted_at": None,
    "result_file": None,
    "result_expires_at": None,
    "result_deleted_at": None,
    "started_at": None,
    "finished_at": None,
}


def submit_job(
    session: Session,
    *,
    owner_id: uuid.UUID,
    processor: Processor,
    params: dict[str, Any],
    max_attempts: int,
    queue: str | None = None,
    idempotency_key: str | None = None,
    request_id: str | None = None,
    job_id: uuid.UUID | None = None,
    input_file: dict[str, Any] | None = None,
) -> SubmitResult:
    """Create a queued job unless the idempotency key names a recent one.

    `job_id` is given when something was already stored under the job's id (an upload);
    `input_file` describes that object.

    The job is inserted as published; the caller publishes it before committing and clears
    `published_at` if the broker refuses (the outbox sweep then sends it).
    """
    if idempotency_key:
        existing = find_by_idempotency_key(session, owner_id, idempotency_key)
        if existing is not None:
            if existing.created_at >= now() - IDEMPOTENCY_WINDOW:
                check_same_request(existing, processor, params)
                return SubmitResult(existing, created=False)
            existing.idempotency_key = None  # expired: the key may name a new job
            session.flush()
    job_id = job_id or uuid.uuid4()
    queue = queue or processor.queue
    inserted = {
        "id": job_id,
        "owner_id": owner_id,
        "kind": processor.kind,
        "processor": processor.name,
        "queue": queue,
        "params": params,
        "max_attempts": max_attempts,
        "idempotency_key": idempotency_key,
        "request_id": request_id,
        "dispatch_id": uuid.uuid4(),
        "input_file": input_file,
    }
    values = {
        **inserted,
        "lock_key": job_lock_key(job_id),
        "params": json.dumps(params),
        "input_file": json.dumps(input_file) if input_file is not None else None,
        "event": json.dumps(
            {
                "processor": processor.name,
                "queue": queue,
                "max_attempts": max_attempts,
                "request_id": request_id,
            }
        ),
    }
    row = session.execute(_INSERT_JOB, values).mappings().one_or_none()
    if row is None:
        # Another request with the same key committed first: its job is the answer.
        assert idempotency_key is not None
        existing = find_by_idempotency_key(session, owner_id, idempotency_key)
        if existing is None:
            raise JobConflict(
                "idempotency_key_in_flight",
                "A request with this Idempotency-Key is still being processed.",
            )
        check_same_request(existing, processor, params)
        return SubmitResult(existing, created=False)
    # A plain snapshot of the new row: mapping it into the ORM costs more than the insert.
    return SubmitResult(NewJob(**_NEW_JOB_DEFAULTS, **inserted, **row), created=True)


def job_lock_key(job_id: uuid.UUID) -> int:
    """The advisory-lock key that guards a new job's row until its insert commits."""
    return int.from_bytes(job_id.bytes[:8], "big", signed=True)


#: Params a submit generates itself (not part of what the user asked): ignored on replays.
_GENERATED_PARAMS = ("deployment_id",)


def check_same_request(existing: Job, processor: Processor, params: dict[str, Any]) -> None:
    def asked(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k not in _GENERATED_PARAMS}

    if existing.processor != processor.name or asked(existing.params) != asked(params):
        raise JobConflict(
            "idempotency_key_reused",
            "This Idempotency-Key was already used for a different request.",
        )


def cancel_job(session: Session, job: Job) -> bool:
    """Cancel now if the job is not running (True); else flag it for its worker (False)."""
    status = JobStatus(job.status)
    if status in (JobStatus.QUEUED, JobStatus.RETRYING):
        set_status(job, JobStatus.CANCELLED)
        job.finished_at = now()
        job.dispatch_id = None  # any message still in flight is now stale and dropped
        job.next_attempt_at = None
        events.record(
            session, job.id, events.CANCELLED, attempt=job.attempts, while_status=status.value
        )
        return True
    if status is JobStatus.RUNNING:
        if not job.cancel_requested:
            job.cancel_requested = True
            events.record(session, job.id, events.CANCEL_REQUESTED, attempt=job.attempts)
        return False
    raise JobConflict("job_not_cancellable", f"A {status.value} job cannot be cancelled.")


def retry_job(session: Session, job: Job, *, reason: str) -> None:
    """Queue a failed, dead or cancelled job again with a fresh attempt budget."""
    status = JobStatus(job.status)
    if status not in RETRYABLE_BY_USER:
        raise JobConflict(
            "job_not_retryable",
            f"Only failed, dead or cancelled jobs can be retried; this one is {status.value}.",
        )
    if job.input_file is not None and job.input_deleted_at is not None:
        raise JobConflict(
            "input_deleted",
            "The job's input was deleted when it ended; submit the file again.",
        )
    set_status(job, JobStatus.QUEUED)
    job.attempts = 0
    job.error_code = job.error_message = None
    job.result = None
    job.progress_current = job.progress_total = None
    job.progress_message = None
    job.cancel_requested = False
    job.dispatch_id = uuid.uuid4()
    job.published_at = None
    job.next_attempt_at = None
    job.heartbeat_at = None
    job.worker_host = None
    job.worker_pid = None
    job.started_at = job.finished_at = None
    events.record(session, job.id, events.REQUEUED, reason=reason, previous_status=status.value)
