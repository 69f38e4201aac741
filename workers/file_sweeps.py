"""Periodic clean-up of stored files: inputs of ended jobs, results past their retention.

Each run handles at most `SWEEP_BATCH_SIZE` jobs per kind, oldest first, with SKIP LOCKED:
after an outage (storage down for an hour) thousands of objects may be waiting, and one
unbounded run would hold row locks and storage connections for minutes. Short bounded runs
every FILE_SWEEP_INTERVAL drain any backlog while each stays cheap.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select

from shared.clock import now
from shared.config import Settings
from shared.db import session_scope
from shared.jobs.status import JobStatus
from shared.models import Job
from shared.storage.base import StorageError
from workers.file_jobs import INPUT_DELETED_ON, worker_storage

log = logging.getLogger(__name__)


def delete_ended_inputs(settings: Settings) -> int:
    """Inputs of succeeded, failed and cancelled jobs (a worker normally deletes them at
    once; this catches cancels of queued jobs and failed deletions), and of dead jobs once
    the retention has passed without a requeue."""
    storage = worker_storage(settings)
    dead_cutoff = now() - timedelta(seconds=settings.result_retention)
    deleted = 0
    with session_scope() as session:
        jobs = session.scalars(
            select(Job)
            .where(
                Job.input_file.is_not(None),
                Job.input_deleted_at.is_(None),
                Job.finished_at.is_not(None),
                or_(
                    Job.status.in_(sorted(INPUT_DELETED_ON)),
                    and_(Job.status == JobStatus.DEAD.value, Job.finished_at < dead_cutoff),
                ),
            )
            .order_by(Job.finished_at)
            .limit(settings.sweep_batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        for job in jobs:
            assert job.input_file is not None  # selected with `input_file IS NOT NULL`, locked
            try:
                storage.delete(job.input_file["key"])
            except StorageError:
                log.warning("input not deleted", exc_info=True, extra={"event": "input_kept"})
                continue
            job.input_deleted_at = now()
            deleted += 1
    return deleted


def expire_results(settings: Settings) -> int:
    """Results whose retention (RESULT_RETENTION) has passed."""
    storage = worker_storage(settings)
    expired = 0
    with session_scope() as session:
        jobs = session.scalars(
            select(Job)
            .where(
                Job.result_file.is_not(None),
                Job.result_deleted_at.is_(None),
                Job.result_expires_at <= now(),
            )
            .order_by(Job.result_expires_at)
            .limit(settings.sweep_batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        for job in jobs:
            assert job.result_file is not None  # selected with `result_file IS NOT NULL`, locked
            try:
                storage.delete(job.result_file["key"])
            except StorageError:
                log.warning("result not expired", exc_info=True, extra={"event": "result_kept"})
                continue
            job.result_deleted_at = now()
            expired += 1
    return expired


def run_file_sweeps(settings: Settings) -> dict[str, Any]:
    counts = {
        "inputs_deleted": delete_ended_inputs(settings),
        "results_expired": expire_results(settings),
    }
    if any(counts.values()):
        log.info("file sweep", extra={"event": "file_sweep", **counts})
    return counts
