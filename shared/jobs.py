"""Job operations shared by the API and the maintenance tasks: cancel, retry. (Submitting a
job is `shared/submission.py`.)

Each function works inside the caller's session and leaves committing and publishing
to the caller, so one request is one transaction.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import Job
from shared.status import ACTIVE


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
