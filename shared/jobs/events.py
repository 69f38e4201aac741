"""Job history lines. Every lifecycle step writes one, in the same transaction as the change."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from shared.jobs import live  # noqa: F401  (publishes committed events to live streams)
from shared.models import JobEvent

SUBMITTED = "submitted"
STARTED = "started"
PROGRESS = "progress"
ATTEMPT_FAILED = "attempt_failed"
RETRY_SCHEDULED = "retry_scheduled"
WORKER_LOST = "worker_lost"
DEAD_LETTERED = "dead_lettered"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCEL_REQUESTED = "cancel_requested"
CANCELLED = "cancelled"
REQUEUED = "requeued"
#: The broker lost the job's message (or a dead worker took it): published again.
REDISPATCHED = "redispatched"
#: A delayed (`scheduled`) job came due and was queued for its fleet.
RELEASED = "released"
#: A delivery reached a worker while the job's queue was paused: the job waits unpublished.
HELD = "held"


def record(
    session: Session, job_id: uuid.UUID, type_: str, attempt: int | None = None, **data: Any
) -> JobEvent:
    event = JobEvent(job_id=job_id, type=type_, attempt=attempt, data=data)
    session.add(event)
    return event
