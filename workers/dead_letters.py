"""Dead letters, the consumer side: recording the message a dead job sent
(shared/jobs/dead_letters.py builds and sends it)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from shared.models import DeadLetter, Job

log = logging.getLogger(__name__)


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
    result = session.execute(statement)
    # An INSERT's result is a CursorResult, which counts the rows written; Session.execute is
    # typed for every kind of statement as a plain Result.
    assert isinstance(result, CursorResult)
    created = result.rowcount == 1
    log.info(
        "dead letter recorded" if created else "dead letter already recorded",
        extra={"event": "dead_letter_recorded", "job_id": payload["job_id"]},
    )
    return created
