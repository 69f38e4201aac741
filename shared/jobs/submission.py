"""Submitting a job: the one path every kind of job takes, whichever endpoint it came through.

In order:

1. Idempotency: a key that names a job of the last 24 hours answers with that job, before
   any quota is spent (a different request under the same key is a conflict).
2. Quotas (the caller's `Quotas`; this module knows none of them): the rate first, then,
   under a per-user advisory lock, the owner's active work, so concurrent submits cannot
   race past a limit together. A kind's own quota (active deployments) is checked there too.
3. Staging (`InputStager`): the input is stored under the new job's id only once the
   request is known to be new and within quota.
4. Insert: one statement writes the job and its `submitted` event and takes the job's lock.
5. Rows that belong to the job (`with_job`: a deployment) join the same transaction.
6. Publish before the commit (`shared.dispatch.publish.publish_new_job`), then commit: one commit.
7. The metric and the live event.

If anything after staging fails, or a concurrent request with the same key inserted first,
the staged object is discarded: no object is left without its job and no job is committed
without its input. The caller parses the request and answers; it commits nothing itself.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Protocol

from celery import Celery
from sqlalchemy import BigInteger, DateTime, column, select, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Session

from shared import locks, logging_setup, metrics
from shared.clock import now
from shared.dispatch.priorities import Priority
from shared.dispatch.publish import Dispatch, publish_new_job, publish_new_jobs
from shared.errors import JobConflict
from shared.jobs import live
from shared.jobs.status import JobStatus
from shared.models import Job, JobBatch, JobEvent
from shared.processors import Processor

log = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW = timedelta(hours=24)


class NewJob(SimpleNamespace):
    """A just-inserted job row, read like a Job (attribute access)."""


@dataclass(frozen=True)
class SubmitResult:
    job: Job | NewJob
    created: bool  # False: the answer is an earlier job with the same Idempotency-Key


class Quotas(Protocol):
    """The limits on new work: asked only once a submission is known not to be a replay."""

    def count_submission(self, jobs: int = 1) -> None:
        """Spend this submission (of `jobs` jobs) against limits that need no lock
        (submissions per minute)."""

    def checks_active_work(self, scheduled: int = 0) -> bool:
        """Whether `check_active_work` has a limit to check (the lock costs a query)."""

    def check_active_work(self, session: Session, jobs: int = 1, scheduled: int = 0) -> None:
        """Refuse if `jobs` more would give the owner too much active work, or `scheduled`
        more too many jobs waiting for their `run_at`; runs under `lock_owner`."""


class InputStager(Protocol):
    """Stores a submission's input under the new job's id, and removes it again."""

    def stage(self, job_id: uuid.UUID) -> dict[str, Any]:
        """Store the input; returns what the job records of it (its `input_file`)."""

    def discard(self, stored: dict[str, Any]) -> None:
        """Remove what `stage` stored because no job will own it. Must not raise."""


@dataclass(frozen=True)
class Submission:
    """Everything a submit needs, as the caller parsed it from the request."""

    owner_id: uuid.UUID
    processor: Processor
    params: dict[str, Any]
    max_attempts: int
    queue: str | None = None  # default: the processor's
    idempotency_key: str | None = None
    request_id: str | None = None
    quotas: Quotas | None = None
    stager: InputStager | None = None
    with_job: Callable[[Session, NewJob], None] | None = None  # adds rows the job owns
    priority: str = Priority.NORMAL.value
    labels: dict[str, str] = field(default_factory=dict)
    run_at: datetime | None = None  # later than now: the job waits as `scheduled`
    schedule_id: uuid.UUID | None = None  # made by this schedule...
    scheduled_for: datetime | None = None  # ...for this occurrence (unique per schedule)
    batch_id: uuid.UUID | None = None
    #: Whether the job is held back as `scheduled` until its `run_at`: decided once, when the
    #: submission is made, so the quota check and the insert cannot disagree about a
    #: `run_at` a few milliseconds ahead.
    waits: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "waits", self.run_at is not None and self.run_at > now())


def submit_job(
    session: Session, submission: Submission, *, celery: Celery | None, redis_url: str
) -> SubmitResult:
    """Create the job, or answer the earlier one its Idempotency-Key names (module docstring).

    Commits on success; on any failure rolls back, discards what was staged and re-raises.
    """
    replay, expired = _earlier_submission(session, submission)
    if replay is not None:
        return SubmitResult(replay, created=False)
    if submission.quotas is not None:
        # A job held back as `scheduled` is not active until it is released.
        _check_quotas(
            session, submission.owner_id, submission.quotas, active=0 if submission.waits else 1
        )
    if expired is not None:
        expired.idempotency_key = None  # the key may name a new job
        session.flush()
    job_id = uuid.uuid4()
    stager = submission.stager
    staged = stager.stage(job_id) if stager is not None else None
    try:
        job = insert_job(session, submission, job_id, staged)
        if job is None:
            return _answer_concurrent_winner(session, submission, staged)
        _complete_and_publish(session, submission, job, celery)
    except BaseException:
        session.rollback()
        _discard_staged(stager, staged)
        raise
    _announce(job, submission, redis_url)
    return SubmitResult(job, created=True)


def _earlier_submission(session: Session, submission: Submission) -> tuple[Job | None, Job | None]:
    """By the submission's Idempotency-Key: (the earlier job to answer again, if within the
    window and the same request; an expired earlier job, whose key the new job takes)."""
    if not submission.idempotency_key:
        return None, None
    existing = find_by_idempotency_key(session, submission.owner_id, submission.idempotency_key)
    if existing is None:
        return None, None
    if existing.created_at >= now() - IDEMPOTENCY_WINDOW:
        check_same_request(existing, submission.processor, submission.params)
        return existing, None
    return None, existing


def _answer_concurrent_winner(
    session: Session, submission: Submission, staged: dict[str, Any] | None
) -> SubmitResult:
    """A concurrent submit inserted first: its job is the answer, ours is not made."""
    winner = _concurrent_winner(session, submission)
    session.commit()
    _discard_staged(submission.stager, staged)
    return SubmitResult(winner, created=False)


def _complete_and_publish(
    session: Session, submission: Submission, job: NewJob, celery: Celery | None
) -> None:
    """The rows the job owns, its message unless it waits as `scheduled`, then the commit."""
    if submission.with_job is not None:
        submission.with_job(session, job)
    if job.status == JobStatus.QUEUED.value:  # a scheduled job is published when due
        publish_new_job(session, job, submission.processor.task_name, celery)
    session.commit()


def _discard_staged(stager: InputStager | None, staged: dict[str, Any] | None) -> None:
    if stager is not None and staged is not None:
        stager.discard(staged)


def lock_owner(session: Session, owner_id: uuid.UUID) -> None:
    """Serialise the owner's submissions (and retries) until the transaction ends, so counts
    of their active work cannot be raced past by a concurrent request."""
    locks.lock(session, owner_id)


def _check_quotas(
    session: Session, owner_id: uuid.UUID, quotas: Quotas, jobs: int = 1, active: int = 1
) -> None:
    """`jobs` submitted, `active` of them active at once, the rest scheduled for later."""
    quotas.count_submission(jobs)
    if quotas.checks_active_work(jobs - active):
        lock_owner(session, owner_id)
        quotas.check_active_work(session, active, jobs - active)


def find_by_idempotency_key(session: Session, owner_id: uuid.UUID, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


def recent_job(session: Session, owner_id: uuid.UUID, key: str) -> Job | None:
    """The job this key names if a submit with it would be answered as a replay."""
    existing = find_by_idempotency_key(session, owner_id, key)
    if existing is not None and existing.created_at >= now() - IDEMPOTENCY_WINDOW:
        return existing
    return None


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


def _concurrent_winner(session: Session, submission: Submission) -> Job:
    """The job of the request with the same key, or of the same schedule occurrence, that
    inserted first (its answer is ours)."""
    if submission.schedule_id is not None:
        occurrence = session.scalar(
            select(Job).where(
                Job.schedule_id == submission.schedule_id,
                Job.scheduled_for == submission.scheduled_for,
            )
        )
        if occurrence is not None:
            return occurrence
    assert submission.idempotency_key is not None
    existing = find_by_idempotency_key(session, submission.owner_id, submission.idempotency_key)
    if existing is None:
        raise JobConflict(
            "idempotency_key_in_flight",
            "A request with this Idempotency-Key is still being processed.",
        )
    check_same_request(existing, submission.processor, submission.params)
    return existing


# One statement inserts the job and its `submitted` event and takes the job's advisory lock
# (held until commit, see shared.dispatch.publish.publish_new_job). `published_at` is set
# optimistically and cleared if the publish then fails. An insert that collides with another
# (the same Idempotency-Key, or the same schedule occurrence: uq_jobs_owner_idempotency_key,
# uq_jobs_schedule_occurrence) returns no row instead of aborting the transaction.
_INSERT_JOB = text("""
WITH lock AS (SELECT pg_advisory_xact_lock(:lock_key)),
job AS (
    INSERT INTO jobs (id, owner_id, kind, processor, queue, params, status, attempts,
        max_attempts, idempotency_key, request_id, dispatch_id, cancel_requested,
        input_file, published_at, priority, run_at, labels, schedule_id, scheduled_for,
        batch_id, created_at, updated_at)
    SELECT :id, :owner_id, :kind, :processor, :queue, CAST(:params AS jsonb), :status, 0,
        :max_attempts, :idempotency_key, :request_id, :dispatch_id, false,
        CAST(:input_file AS jsonb), CASE WHEN :status = 'queued' THEN now() END, :priority,
        :run_at, CAST(:labels AS jsonb), :schedule_id, :scheduled_for, :batch_id, now(), now()
    FROM lock
    ON CONFLICT DO NOTHING
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


def insert_job(
    session: Session,
    submission: Submission,
    job_id: uuid.UUID,
    input_file: dict[str, Any] | None = None,
) -> NewJob | None:
    """Insert the queued job and its `submitted` event; None if a concurrent request with
    the same Idempotency-Key (or a job for the same schedule occurrence) inserted first.

    `input_file` describes what was staged under `job_id` (an upload). The job is inserted
    as published; the caller publishes it before committing and `publish_new_job` clears
    `published_at` if the broker refuses (the outbox sweep then sends it).
    """
    inserted = _row(submission, job_id, input_file)
    values = {
        **inserted,
        "lock_key": locks.lock_key(job_id),
        "params": json.dumps(submission.params),
        "labels": json.dumps(submission.labels),
        "input_file": json.dumps(input_file) if input_file is not None else None,
        "event": json.dumps(_submitted_event(submission)),
    }
    row = session.execute(_INSERT_JOB, values).mappings().one_or_none()
    if row is None:
        return None
    # A plain snapshot of the new row: mapping it into the ORM costs more than the insert.
    return NewJob(**_NEW_JOB_DEFAULTS, **inserted, **row)


def _row(
    submission: Submission, job_id: uuid.UUID, input_file: dict[str, Any] | None
) -> dict[str, Any]:
    """The values a new job row is inserted with (the rest are defaults or timestamps)."""
    processor = submission.processor
    return {
        "id": job_id,
        "owner_id": submission.owner_id,
        "kind": processor.kind,
        "processor": processor.name,
        "queue": submission.queue or processor.queue,
        "params": submission.params,
        "max_attempts": submission.max_attempts,
        "idempotency_key": submission.idempotency_key,
        "request_id": submission.request_id,
        "dispatch_id": uuid.uuid4(),
        "input_file": input_file,
        "status": (JobStatus.SCHEDULED if submission.waits else JobStatus.QUEUED).value,
        "priority": submission.priority,
        "run_at": submission.run_at,
        "labels": submission.labels,
        "schedule_id": submission.schedule_id,
        "scheduled_for": submission.scheduled_for,
        "batch_id": submission.batch_id,
    }


def _submitted_event(submission: Submission) -> dict[str, Any]:
    """The data of the job's `submitted` event."""
    return {
        "processor": submission.processor.name,
        "queue": submission.queue or submission.processor.queue,
        "max_attempts": submission.max_attempts,
        "request_id": submission.request_id,
        "priority": submission.priority,
        **({"run_at": submission.run_at.isoformat()} if submission.run_at else {}),
    }


# --- Batches: the same steps once for many jobs -----------------------------------------


@dataclass(frozen=True)
class BatchSubmission:
    """A batch as the caller parsed it: its jobs (one owner's, in submission order; their
    own keys, quotas and stagers unused), the hash of the canonical request, and the
    Idempotency-Key that covers the whole batch."""

    owner_id: uuid.UUID
    items: list[Submission]
    request_hash: str
    idempotency_key: str | None = None
    quotas: Quotas | None = None


@dataclass(frozen=True)
class BatchResult:
    jobs: list[Job] | list[NewJob]  # in submission order
    created: bool  # False: the jobs of an earlier batch with the same Idempotency-Key


def submit_batch(
    session: Session, batch: BatchSubmission, *, celery: Celery | None, redis_url: str
) -> BatchResult:
    """Create every job of the batch, or answer the earlier batch its Idempotency-Key names.

    `submit_job`'s steps, once for all the jobs: replay; quotas (each job counts, and a
    batch that would pass a limit is refused whole); one statement inserting the batch row,
    the jobs and their `submitted` events; every message in one broker round trip (jobs
    due later are not published); one commit; metrics and live events. On any failure
    nothing is left: the transaction rolls back whole.
    """
    expired = None
    if batch.idempotency_key:
        existing = find_batch(session, batch.owner_id, batch.idempotency_key)
        if existing is not None:
            if existing.created_at >= now() - IDEMPOTENCY_WINDOW:
                return BatchResult(_replayed(session, existing, batch), created=False)
            expired = existing
    if batch.quotas is not None:
        waiting = sum(1 for item in batch.items if item.waits)
        _check_quotas(
            session, batch.owner_id, batch.quotas, len(batch.items), len(batch.items) - waiting
        )
    if expired is not None:
        expired.idempotency_key = None  # the key may name a new batch
        session.flush()
    try:
        jobs = insert_batch(session, batch)
        if jobs is None:
            return BatchResult(_concurrent_batch(session, batch), created=False)
        queued = [
            Dispatch.for_job(job, item.processor.task_name)
            for job, item in zip(jobs, batch.items, strict=True)
            if job.status == JobStatus.QUEUED.value
        ]
        if queued:
            publish_new_jobs(session, queued, celery)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    _announce_batch(jobs, batch, redis_url)
    return BatchResult(jobs, created=True)


def find_batch(session: Session, owner_id: uuid.UUID, key: str) -> JobBatch | None:
    return session.scalar(
        select(JobBatch).where(JobBatch.owner_id == owner_id, JobBatch.idempotency_key == key)
    )


def _replayed(session: Session, existing: JobBatch, batch: BatchSubmission) -> list[Job]:
    """The earlier batch's jobs in submission order (their `submitted` events were
    inserted in that order), if it was the same request."""
    if existing.request_hash != batch.request_hash:
        raise JobConflict(
            "idempotency_key_reused",
            "This Idempotency-Key was already used for a different request.",
        )
    submitted = (JobEvent.job_id == Job.id) & (JobEvent.type == "submitted")
    query = select(Job).join(JobEvent, submitted).where(Job.batch_id == existing.id)
    return list(session.scalars(query.order_by(JobEvent.id)))


def _concurrent_batch(session: Session, batch: BatchSubmission) -> list[Job]:
    """The jobs of the request with the same key that inserted its batch first."""
    assert batch.idempotency_key is not None
    session.commit()  # ends the transaction (and its locks); the winner has committed
    winner = find_batch(session, batch.owner_id, batch.idempotency_key)
    if winner is None:
        raise JobConflict(
            "idempotency_key_in_flight",
            "A request with this Idempotency-Key is still being processed.",
        )
    return _replayed(session, winner, batch)


# One statement for the whole batch: the batch's advisory lock (every job's id shares its
# key, see shared.locks.sharing_key), the batch row (a key that collides with a concurrent
# batch's inserts nothing, and then no job either), the jobs and their `submitted` events,
# inserted in submission order.
_INSERT_BATCH = text("""
WITH lock AS (SELECT pg_advisory_xact_lock(:lock_key)),
batch AS (
    INSERT INTO job_batches (id, owner_id, idempotency_key, request_hash, size, created_at)
    SELECT :batch_id, :owner_id, :idempotency_key, :request_hash, :size, now() FROM lock
    ON CONFLICT ON CONSTRAINT uq_job_batches_owner_key DO NOTHING
    RETURNING id
), item AS (
    SELECT * FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS item(
        ord int, id uuid, kind text, processor text, queue text, params jsonb, status text,
        max_attempts int, request_id text, dispatch_id uuid, priority text,
        run_at timestamptz, labels jsonb, event jsonb)
), job AS (
    INSERT INTO jobs (id, owner_id, kind, processor, queue, params, status, attempts,
        max_attempts, request_id, dispatch_id, cancel_requested, published_at, priority,
        run_at, labels, batch_id, created_at, updated_at)
    SELECT item.id, :owner_id, item.kind, item.processor, item.queue, item.params,
        item.status, 0, item.max_attempts, item.request_id, item.dispatch_id, false,
        CASE WHEN item.status = 'queued' THEN now() END, item.priority, item.run_at,
        item.labels, batch.id, now(), now()
    FROM item, batch ORDER BY item.ord
    RETURNING id, created_at, updated_at, published_at
), event AS (
    INSERT INTO job_events (job_id, type, attempt, data, created_at)
    SELECT item.id, 'submitted', NULL, item.event, now()
    FROM job JOIN item ON item.id = job.id ORDER BY item.ord
    RETURNING id, job_id
)
SELECT job.id, job.created_at, job.updated_at, job.published_at,
    event.id AS submitted_event_id
FROM job JOIN event ON event.job_id = job.id
""").columns(
    column("id", UUID(as_uuid=True)),
    column("created_at", DateTime(timezone=True)),
    column("updated_at", DateTime(timezone=True)),
    column("published_at", DateTime(timezone=True)),
    column("submitted_event_id", BigInteger),
)


def insert_batch(session: Session, batch: BatchSubmission) -> list[NewJob] | None:
    """Insert the batch, its jobs and their events (as published: the caller publishes
    before committing, like `insert_job`); None if a concurrent batch with the same
    Idempotency-Key inserted first."""
    batch_id = uuid.uuid4()
    rows = []
    for item in batch.items:
        row = _row(item, locks.sharing_key(batch_id), None)
        rows.append({**row, "idempotency_key": None, "batch_id": batch_id})
    items = [
        {**row, "ord": index, "event": _submitted_event(item)}
        for index, (row, item) in enumerate(zip(rows, batch.items, strict=True))
    ]
    values = {
        "lock_key": locks.lock_key(batch_id),
        "batch_id": batch_id,
        "owner_id": batch.owner_id,
        "idempotency_key": batch.idempotency_key,
        "request_hash": batch.request_hash,
        "size": len(rows),
        "items": json.dumps(items, default=str),
    }
    inserted: dict[uuid.UUID, dict[str, Any]] = {}
    for found in session.execute(_INSERT_BATCH, values).mappings():
        database_values = dict(found)
        inserted[database_values.pop("id")] = database_values
    if not inserted:
        return None
    return [NewJob(**_NEW_JOB_DEFAULTS, **row, **inserted[row["id"]]) for row in rows]


def _announce_batch(jobs: list[NewJob], batch: BatchSubmission, redis_url: str) -> None:
    """After the commit: one log line, the metrics (one write per processor) and every
    job's live `submitted` event in one publish round trip."""
    logging_setup.bind(user_id=str(batch.owner_id))
    log.info(
        "batch submitted",
        extra={"event": "batch_submitted", "batch_id": str(jobs[0].batch_id), "jobs": len(jobs)},
    )
    for (kind, name), count in Counter((job.kind, job.processor) for job in jobs).items():
        metrics.job_submitted(redis_url, kind, name, count)
    live.broadcast(
        [
            live.message(
                job.submitted_event_id, job.id, "submitted", None, {"processor": job.processor},
                owner_id=batch.owner_id,
            )
            for job in jobs
        ]
    )  # fmt: skip


def _announce(job: NewJob, submission: Submission, redis_url: str) -> None:
    """After the commit: the log line, the metric and the live `submitted` event."""
    processor = submission.processor
    logging_setup.bind(job_id=str(job.id), user_id=str(submission.owner_id))
    log.info("job submitted", extra={"event": "job_submitted", "processor": processor.name})
    metrics.job_submitted(redis_url, processor.kind, processor.name)
    live.broadcast(
        [
            live.message(
                job.submitted_event_id, job.id, "submitted", None, {"processor": processor.name},
                owner_id=submission.owner_id,
            )
        ]
    )  # fmt: skip
