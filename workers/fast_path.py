"""Single-statement versions of the two transitions every job makes: claim and succeed.

A job's common path is queued -> running -> succeeded. Done with the ORM, each step costs a
locking SELECT, an UPDATE and an event INSERT; here each is one guarded UPDATE with its event
written by the same statement (a data-modifying CTE), which triples a worker's throughput.
Anything unusual (a redelivery, a cancel, a superseded dispatch) matches no row and falls
back to the general, row-locking path in `workers.runner`.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text

from shared import live
from shared.db import session_scope
from shared.dispatch import wait_for_uncommitted_job
from shared.status import JobStatus, can_transition

_CLAIMABLE = (JobStatus.QUEUED.value, JobStatus.RETRYING.value)
assert all(can_transition(s, JobStatus.RUNNING) for s in _CLAIMABLE)
assert can_transition(JobStatus.RUNNING, JobStatus.SUCCEEDED)

_CLAIM = text("""
WITH claimed AS (
    UPDATE jobs SET status = 'running', attempts = attempts + 1,
        started_at = COALESCE(started_at, now()), heartbeat_at = now(), next_attempt_at = NULL,
        worker_host = :host, worker_pid = :pid, progress_current = NULL,
        progress_total = NULL, progress_message = NULL, updated_at = now()
    WHERE id = :job_id AND dispatch_id = :dispatch_id AND status IN ('queued', 'retrying')
        AND NOT cancel_requested
    RETURNING id, owner_id, processor, params, attempts,
        EXTRACT(EPOCH FROM clock_timestamp() - created_at) AS waited
), event AS (
    INSERT INTO job_events (job_id, type, attempt, data, created_at)
    SELECT id, 'started', attempts, jsonb_build_object('worker', CAST(:host AS text)), now()
    FROM claimed
    RETURNING id
)
SELECT owner_id, processor, params, attempts, waited, (SELECT id FROM event) AS event_id
FROM claimed
""")

_SUCCEED = text("""
WITH done AS (
    UPDATE jobs SET status = 'succeeded', result = CAST(:result AS jsonb), error_code = NULL,
        error_message = NULL, finished_at = now(), updated_at = now()
    WHERE id = :job_id AND dispatch_id = :dispatch_id AND status = 'running'
    RETURNING id, owner_id, attempts
), event AS (
    INSERT INTO job_events (job_id, type, attempt, data, created_at)
    SELECT id, 'succeeded', attempts, '{}'::jsonb, now() FROM done
    RETURNING id
)
SELECT owner_id, attempts, (SELECT id FROM event) AS event_id FROM done
""")


def try_claim(
    job_id: Any, dispatch_id: Any, host: str, pid: int
) -> tuple[str, dict, int, float] | None:
    """(processor, params, attempt, seconds since submit) if the job was claimed; None to
    take the general path."""
    values = {"job_id": job_id, "dispatch_id": dispatch_id, "host": host, "pid": pid}
    with session_scope() as session:
        row = session.execute(_CLAIM, values).first()
        if row is None:
            # Usually the message outran its submit's commit (it is published just before):
            # wait for that transaction to end, then look again with a fresh snapshot.
            wait_for_uncommitted_job(session, job_id)
            row = session.execute(_CLAIM, values).first()
    if row is None:
        return None
    live.broadcast(
        [
            live.message(
                row.event_id, job_id, "started", row.attempts, {"worker": host}, row.owner_id
            )
        ]
    )
    return row.processor, row.params, row.attempts, float(row.waited)


def try_succeed(job_id: Any, dispatch_id: Any, result: dict[str, Any]) -> bool:
    """Record success if this delivery still owns the running job."""
    with session_scope() as session:
        row = session.execute(
            _SUCCEED,
            {"job_id": job_id, "dispatch_id": dispatch_id, "result": json.dumps(result or {})},
        ).first()
    if row is None:
        return False
    live.broadcast(
        [live.message(row.event_id, job_id, "succeeded", row.attempts, {}, row.owner_id)]
    )
    return True
