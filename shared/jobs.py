"""Small job helpers both sides use: the clock, the 409 error, the active-jobs count.

Submitting is `shared/submission.py`; every status change is `shared/transitions.py`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import Job
from shared.status import ACTIVE, JobStatus


class JobConflict(Exception):
    """The job's current state does not allow the operation (HTTP 409)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def now() -> datetime:
    return datetime.now(UTC)


def count_active_jobs(session: Session, owner_id: uuid.UUID) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.owner_id == owner_id, Job.status.in_([s.value for s in ACTIVE]))
        )
        or 0
    )


def count_scheduled_jobs(session: Session, owner_id: uuid.UUID) -> int:
    """The owner's delayed jobs still waiting for their `run_at` (QUOTA_SCHEDULED_JOBS)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.owner_id == owner_id, Job.status == JobStatus.SCHEDULED.value)
        )
        or 0
    )
