"""Every move a job makes, in one place: its guard, the fields it sets, the event it writes,
and what follows its commit (the message to send, the metric to count).

The rules (which status may follow which) are `shared/jobs/status.py`; this module is the effects.
The API (cancel, retry, dead-letter requeue), the runner (claim, outcome) and the sweeps
(worker lost, lost messages) all call these functions, so "what happens on cancel" is read
here and nowhere else. Each function works inside the caller's session and returns the
`Effects` to apply once the caller has committed: a message sent for an uncommitted state
could be taken by a worker that then cannot see it. Live events need no call: every event
written here is broadcast when its transaction commits (shared/jobs/live.py).

The two moves nearly every job makes, claim and succeed, also have single-statement twins in
`shared/jobs/fast_transitions.py`, built from the field lists below so the two cannot drift.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from celery import Celery
from sqlalchemy.orm import Session

from shared import metrics
from shared.clock import now
from shared.config import Settings
from shared.dispatch.publish import Dispatch, delivered, publish_job
from shared.errors import JobConflict, JobError
from shared.jobs import events
from shared.jobs.backoff import retry_delay
from shared.jobs.dead_letters import dead_letter_payload, send_dead_letter
from shared.jobs.status import RETRYABLE_BY_USER, WAITING, JobStatus, check_transition
from shared.models import Job
from shared.webhooks import outbox as webhook_outbox

# -- field lists shared with the single-statement twins ------------------------------------
#: Cleared when an attempt starts: what the previous attempt reported no longer applies.
CLEARED_ON_START = ("next_attempt_at", "progress_current", "progress_total", "progress_message")
#: Cleared when a job succeeds: an earlier attempt's error is not the job's outcome.
CLEARED_ON_SUCCESS = ("error_code", "error_message")
#: Cleared when a finished job is queued again: it starts over as if just submitted.
CLEARED_ON_REQUEUE = (
    "error_code",
    "error_message",
    "result",
    "progress_current",
    "progress_total",
    "progress_message",
    "published_at",
    "next_attempt_at",
    "heartbeat_at",
    "worker_host",
    "worker_pid",
    "started_at",
    "finished_at",
)

WORKER_LOST_MESSAGE = "The worker running the job died or stopped responding."


@dataclass
class Effects:
    """What a committed transition still has to do outside the database.

    Messages go first (`send`), metrics after (`count`), because the runner measures an
    attempt's duration up to its outcome and counts only then.
    """

    kind: str
    processor: str
    dispatch: Dispatch | None = None
    dead_letter: dict[str, Any] | None = None
    ended: str | None = None  # the status the job ended in, for dockyard_jobs_ended_total
    requeued: str | None = None  # why it was published again, for ..._requeued_total
    worker_lost: bool = False
    unmark: uuid.UUID | None = None  # a dispatch dropped unrun: its broker mark is done
    webhook_deliveries: list[uuid.UUID] = field(default_factory=list)  # recorded, to send

    def send(self, celery: Celery | None = None, session: Session | None = None) -> None:
        """Send the messages; `celery`/`session` as shared.dispatch.publish.publish_job takes them."""
        if self.unmark is not None:
            delivered(self.unmark, celery)
        if self.dispatch is not None:
            publish_job(self.dispatch, celery, session)
        if self.dead_letter is not None:
            send_dead_letter(self.dead_letter, celery)
        webhook_outbox.send(self.webhook_deliveries, celery)

    def count(
        self, redis_url: str, duration: float | None = None, queue_wait: float | None = None
    ) -> None:
        if self.worker_lost:
            metrics.worker_lost(redis_url, self.kind, self.processor)
        if self.requeued is not None:
            metrics.job_requeued(redis_url, self.kind, self.processor, self.requeued)
        if self.ended is not None:
            metrics.job_ended(
                redis_url, self.kind, self.processor, self.ended, duration, queue_wait
            )
        elif duration is not None:
            metrics.attempt_observed(redis_url, self.kind, self.processor, duration, queue_wait)

    def apply(
        self, redis_url: str, celery: Celery | None = None, session: Session | None = None
    ) -> None:
        self.send(celery, session)
        self.count(redis_url)


def _effects(job: Job, **fields: Any) -> Effects:
    return Effects(kind=job.kind, processor=job.processor, **fields)


#: The webhook event of each status a job ends in.
_ENDED_EVENTS = {
    JobStatus.SUCCEEDED: webhook_outbox.JOB_SUCCEEDED,
    JobStatus.FAILED: webhook_outbox.JOB_FAILED,
    JobStatus.DEAD: webhook_outbox.JOB_DEAD,
    JobStatus.CANCELLED: webhook_outbox.JOB_CANCELLED,
}


def _ended(session: Session, job: Job, status: JobStatus, **fields: Any) -> Effects:
    """The effects of a move that ends the job: its metric, and its webhook deliveries,
    recorded now in the caller's transaction (sent by Effects.send after the commit)."""
    deliveries = webhook_outbox.record(
        session,
        owner_id=job.owner_id,
        event_type=_ENDED_EVENTS[status],
        labels=job.labels,
        job_id=job.id,
    )
    return _effects(job, ended=status.value, webhook_deliveries=deliveries, **fields)


def set_status(job: Job, target: JobStatus) -> None:
    """The only way code changes a loaded job's status: the state machine is checked."""
    check_transition(job.id, job.status, target)
    job.status = target.value


def _clear(job: Job, names: tuple[str, ...]) -> None:
    for name in names:
        setattr(job, name, None)


# -- worker side -------------------------------------------------------------------------


def start(session: Session, job: Job, host: str, pid: int) -> None:
    """queued/retrying (or a running job whose worker died) -> running, one more attempt.
    Twin: shared.jobs.fast_transitions.try_start."""
    set_status(job, JobStatus.RUNNING)
    job.attempts += 1
    job.started_at = job.started_at or now()
    job.heartbeat_at = now()
    job.worker_host = host
    job.worker_pid = pid
    _clear(job, CLEARED_ON_START)
    events.record(session, job.id, events.STARTED, attempt=job.attempts, worker=host)


def succeed(session: Session, job: Job, result: dict[str, Any]) -> Effects:
    """running -> succeeded. Twin: shared.jobs.fast_transitions.try_succeed."""
    set_status(job, JobStatus.SUCCEEDED)
    job.result = result
    _clear(job, CLEARED_ON_SUCCESS)
    job.finished_at = now()
    events.record(session, job.id, events.SUCCEEDED, attempt=job.attempts)
    return _ended(session, job, JobStatus.SUCCEEDED)


Outcome = Literal["failed", "retrying", "dead"]


def attempt_failed(
    session: Session,
    job: Job,
    error: JobError,
    task_name: str,
    settings: Settings,
    tb: str | None = None,
) -> tuple[Outcome, Effects]:
    """running -> failed (a permanent error), retrying (attempts left) or dead (none left)."""
    job.error_code, job.error_message = error.code, error.message
    described = {"code": error.code, "message": error.message}
    events.record(
        session,
        job.id,
        events.ATTEMPT_FAILED,
        attempt=job.attempts,
        error=described,
        retryable=error.retryable,
    )
    if not error.retryable:
        set_status(job, JobStatus.FAILED)
        job.finished_at = now()
        events.record(session, job.id, events.FAILED, attempt=job.attempts, error=described)
        return "failed", _ended(session, job, JobStatus.FAILED)
    if job.attempts < job.max_attempts:
        return "retrying", schedule_retry(session, job, task_name, settings)
    return "dead", dead_letter(session, job, task_name, tb)


def schedule_retry(
    session: Session,
    job: Job,
    task_name: str,
    settings: Settings,
    delay: float | None = None,
    reason: str = "retryable_error",
) -> Effects:
    """running/retrying -> retrying under a new dispatch id, due after the backoff delay.
    Its message follows the commit, to the job's own queue (never Celery's default)."""
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
    return _effects(job, dispatch=Dispatch.for_job(job, task_name, countdown=delay or None))


def dead_letter(session: Session, job: Job, task_name: str, tb: str | None) -> Effects:
    """running -> dead: no attempts left. The dead letter follows the commit (and the sweep
    sends it again if that message is lost)."""
    set_status(job, JobStatus.DEAD)
    job.finished_at = now()
    events.record(
        session,
        job.id,
        events.DEAD_LETTERED,
        attempt=job.attempts,
        error={"code": job.error_code, "message": job.error_message},
    )
    payload = dead_letter_payload(job, task_name, tb, job.finished_at)
    return _ended(session, job, JobStatus.DEAD, dead_letter=payload)


def finish_cancelled(session: Session, job: Job) -> Effects:
    """running -> cancelled: the worker stopped at a cancel the user asked for."""
    set_status(job, JobStatus.CANCELLED)
    job.finished_at = now()
    job.result = None
    events.record(session, job.id, events.CANCELLED, attempt=job.attempts)
    return _ended(session, job, JobStatus.CANCELLED)


LostOutcome = Literal["cancelled", "dead", "again"]


def worker_lost(
    session: Session, job: Job, task_name: str, **detail: Any
) -> tuple[LostOutcome, Effects]:
    """A running job's worker died (its heartbeat stopped, or its pool process is gone): that
    attempt is over. Cancelled if a cancel was asked, dead on its last attempt, otherwise
    `again`: the caller runs it again (the same delivery at once, or a new one via
    schedule_retry). `detail` says how the loss was noticed, for the event."""
    events.record(
        session,
        job.id,
        events.WORKER_LOST,
        attempt=job.attempts,
        worker=job.worker_host,
        **detail,
    )
    if job.cancel_requested:
        effects = finish_cancelled(session, job)
        effects.worker_lost = True
        return "cancelled", effects
    job.error_code, job.error_message = "worker_lost", WORKER_LOST_MESSAGE
    if job.attempts >= job.max_attempts:
        effects = dead_letter(session, job, task_name, None)
        effects.worker_lost = True
        return "dead", effects
    return "again", _effects(job, worker_lost=True)


def hold(session: Session, job: Job, reason: str = "queue_paused") -> Effects:
    """queued/retrying, delivered while its queue is paused -> queued and unpublished
    (shared/dispatch/queue_states.py): the message is dropped unrun and its mark removed; the job
    waits in PostgreSQL, and resume publishes it again with the same dispatch id and
    priority. A retry whose backoff is over waits as `queued`, like any job due to run."""
    if job.status != JobStatus.QUEUED.value:
        set_status(job, JobStatus.QUEUED)
    job.published_at = None
    job.next_attempt_at = None
    events.record(
        session, job.id, events.HELD, attempt=job.attempts, reason=reason, queue=job.queue
    )
    return _effects(job, unmark=job.dispatch_id)


def redispatch(session: Session, job: Job, task_name: str, reason: str) -> Effects:
    """queued/retrying, whose message the broker lost -> the same status under a new
    dispatch id. A retry keeps what is left of its backoff, counted from now, so the
    stale-retry sweep does not take it for lost again."""
    delay = 0.0
    if job.status == JobStatus.RETRYING.value and job.next_attempt_at is not None:
        delay = max(0.0, (job.next_attempt_at - now()).total_seconds())
        job.next_attempt_at = now() + timedelta(seconds=delay)
    previous = job.dispatch_id
    job.dispatch_id = uuid.uuid4()
    job.published_at = None
    events.record(
        session,
        job.id,
        events.REDISPATCHED,
        attempt=job.attempts,
        reason=reason,
        status=job.status,
        previous_dispatch_id=str(previous),
        delay=round(delay, 3),
    )
    dispatch = Dispatch.for_job(job, task_name, countdown=delay or None)
    return _effects(job, dispatch=dispatch, requeued=reason)


def release(session: Session, job: Job, task_name: str) -> Effects:
    """scheduled -> queued: a delayed job is due (workers/release.py). It keeps the dispatch
    id it was submitted with; its message follows the commit, and until the row is marked
    published the outbox sweep would send it. The event says how late the release was."""
    set_status(job, JobStatus.QUEUED)
    job.published_at = None
    assert job.run_at is not None, "only a job with a run_at is scheduled"
    events.record(
        session,
        job.id,
        events.RELEASED,
        run_at=job.run_at.isoformat(),
        late=round((now() - job.run_at).total_seconds(), 3),
    )
    return _effects(job, dispatch=Dispatch.for_job(job, task_name))


# -- user and operator side ----------------------------------------------------------------


def cancel(session: Session, job: Job) -> tuple[bool, Effects]:
    """Cancel now if the job is not running (True); else flag it for its worker (False),
    which stops at its next progress report (finish_cancelled)."""
    status = JobStatus(job.status)
    if status in WAITING:
        set_status(job, JobStatus.CANCELLED)
        job.finished_at = now()
        job.dispatch_id = None  # any message still in flight is now stale and dropped
        job.next_attempt_at = None
        events.record(
            session, job.id, events.CANCELLED, attempt=job.attempts, while_status=status.value
        )
        return True, _ended(session, job, JobStatus.CANCELLED)
    if status is JobStatus.RUNNING:
        if not job.cancel_requested:
            job.cancel_requested = True
            events.record(session, job.id, events.CANCEL_REQUESTED, attempt=job.attempts)
        return False, _effects(job)
    raise JobConflict("job_not_cancellable", f"A {status.value} job cannot be cancelled.")


def requeue(session: Session, job: Job, task_name: str, *, reason: str) -> Effects:
    """failed/dead/cancelled -> queued with a fresh attempt budget (a user's retry, an
    operator's dead-letter requeue)."""
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
    job.cancel_requested = False
    job.dispatch_id = uuid.uuid4()
    _clear(job, CLEARED_ON_REQUEUE)
    events.record(session, job.id, events.REQUEUED, reason=reason, previous_status=status.value)
    return _effects(job, dispatch=Dispatch.for_job(job, task_name), requeued=reason)
