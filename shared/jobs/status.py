"""The job state machine: the one place that says which status may follow which."""

from __future__ import annotations

import enum
import logging

from shared.errors import DomainError

log = logging.getLogger(__name__)


class JobStatus(enum.StrEnum):
    SCHEDULED = "scheduled"  # waits for its `run_at`; published when due
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


S = JobStatus

#: Every legal move. `running -> retrying` also covers a worker lost mid-job;
#: `failed/dead/cancelled -> queued` is an explicit user or operator retry;
#: `scheduled -> queued` is the release of a delayed job when it is due;
#: `retrying -> queued` a due retry held back by a paused queue (shared/dispatch/queue_states.py).
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.SCHEDULED: frozenset({S.QUEUED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.RETRYING, S.DEAD, S.CANCELLED, S.RUNNING}),
    S.RETRYING: frozenset({S.RUNNING, S.CANCELLED, S.RETRYING, S.QUEUED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),
    S.DEAD: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset({S.QUEUED}),
}

#: Work that holds a place in a fleet: what QUOTA_ACTIVE_JOBS counts. A scheduled job is
#: not active until it is released (QUOTA_SCHEDULED_JOBS caps those).
ACTIVE = frozenset({S.QUEUED, S.RUNNING, S.RETRYING})
#: Not started and not ended: what a cancel ends at once.
WAITING = frozenset({S.SCHEDULED, S.QUEUED, S.RETRYING})
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.DEAD, S.CANCELLED})
RETRYABLE_BY_USER = frozenset({S.FAILED, S.DEAD, S.CANCELLED})


class IllegalTransition(DomainError):
    """A status change the state machine does not allow (HTTP 409)."""

    status = 409
    code = "illegal_transition"

    def __init__(self, job_id: object, current: JobStatus, target: JobStatus) -> None:
        self.job_id = job_id
        self.current = current
        self.target = target
        super().__init__(f"job {job_id}: illegal transition {current.value} -> {target.value}")


def can_transition(current: JobStatus | str, target: JobStatus | str) -> bool:
    return JobStatus(target) in TRANSITIONS[JobStatus(current)]


def check_transition(job_id: object, current: JobStatus | str, target: JobStatus | str) -> None:
    """Raise IllegalTransition (and log it) unless current -> target is allowed."""
    current, target = JobStatus(current), JobStatus(target)
    if target not in TRANSITIONS[current]:
        log.warning(
            "illegal job transition refused",
            extra={
                "event": "illegal_transition",
                "job_id": str(job_id),
                "from_status": current.value,
                "to_status": target.value,
            },
        )
        raise IllegalTransition(job_id, current, target)
