"""Counts of a user's jobs that quotas read (active jobs, delayed jobs waiting to run).

Submitting is `shared/jobs/submission.py`; every status change is `shared/jobs/transitions.py`.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.jobs.status import ACTIVE, JobStatus
from shared.models import Job


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
