"""The job state machine: the one place that says which status may follow which."""

from __future__ import annotations

import enum
import logging

log = logging.getLogger(__name__)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


S = JobStatus

#: Every legal move. `running -> retrying` also covers a worker lost mid-job;
#: `failed/dead/cancelled -> queued` is an explicit user or operator retry.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.RETRYING, S.DEAD, S.CANCELLED, S.RUNNING}),
    S.RETRYING: frozenset({S.RUNNING, S.CANCELLED, S.RETRYING}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),
    S.DEAD: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset({S.QUEUED}),
}

ACTIVE = frozenset({S.QUEUED, S.RUNNING, S.RETRYING})
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.DEAD, S.CANCELLED})
RETRYABLE_BY_USER = frozenset({S.FAILED, S.DEAD, S.CANCELLED})


class IllegalTransition(Exception):
    """A status change the state machine does not allow."""

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
