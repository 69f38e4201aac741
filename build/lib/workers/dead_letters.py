"""Dead letters: the message sent when a job exhausted its attempts, and how it is recorded."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared import queues
from shared.celery_app import app as celery_app
from shared.models import DeadLetter, Job

log = logging.getLogger(__name__)


def dead_letter_payload(
    job: Job, task_name: str, traceback_text: str | None, failed_at: datetime
) -> dict[str, Any]:
    return {
        "job_id": str(job.id),
        "dispatch_id": str(job.dispatch_id),
        "task_name": task_name,
        "processor": job.processor,
        "args": {"job_id": str(job.id), "params": job.params, "queue": job.queue},
        "error_code": job.error_code,
        "error_message": job.error_message,
        "traceback": traceback_text,
        "attempts": job.attempts,
        "failed_at": failed_at.isoformat(),
    }


def send_dead_letter(payload: dict[str, Any]) -> bool:
    """Route the payload to the dead-letter queue; False if the broker refused (the sweep
    re-sends dead jobs that have no dead letter)."""
    try:
        celery_app.send_task(
            queues.TASK_DEAD_LETTER, kwargs={"payload": payload}, queue=queues.DEAD_LETTER
        )
    except Exception:
        log.warning(
            "dead letter publish failed",
            exc_info=True,
            extra={"event": "dead_letter_publish_failed", "job_id": payload["job_id"]},
        )
        return False
    return True


def record_dead_letter(session: Session, payload: dict[str, Any]) -> bool:
    """Insert the dead letter once per final delivery; True if it was new."""
    statement = (
        insert(DeadLetter)
        .values(
            id=uuid.uuid4(),
            job_id=uuid.UUID(payload["job_id"]),
            dispatch_id=uuid.UUID(payload["dispatch_id"]),
            task_name=payload["task_name"],
            processor=payload["processor"],
            args=payload["args"],
            error_code=payload.get("error_code"),
            error_message=payload.get("error_message"),
            traceback=payload.get("traceback"),
            attempts=int(payload["attempts"]),
            failed_at=datetime.fromisoformat(payload["failed_at"]),
        )
        .on_conflict_do_nothing(constraint="uq_dead_letters_dispatch")
    )
    if session.get(Job, uuid.UUID(payload["job_id"])) is None:
        log.warning(
            "dead letter for a job that no longer exists dropped",
            extra={"event": "dead_letter_orphan", "job_id": payload["job_id"]},
        )
        return False
    created = session.execute(statement).rowcount == 1
    log.info(
        "dead letter recorded" if created else "dead letter already recorded",
        extra={"event": "dead_letter_recorded", "job_id": payload["job_id"]},
    )
    return created
