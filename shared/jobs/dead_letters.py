"""Dead letters, the producer side: the message sent when a job exhausted its attempts.

In shared/ because a job is dead-lettered by a transition (shared/jobs/transitions.py), which the
runner and the sweeps both make; the consumer that records it is workers/dead_letters.py.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from celery import Celery

from shared.celery_app import app as celery_app
from shared.dispatch import queues
from shared.models import Job

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


def send_dead_letter(payload: dict[str, Any], celery: Celery | None = None) -> bool:
    """Route the payload to the dead-letter queue; False if the broker refused (the sweep
    re-sends dead jobs that have no dead letter)."""
    try:
        (celery or celery_app).send_task(
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
