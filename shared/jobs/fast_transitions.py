"""Single-statement twins of the two transitions every job makes: start and succeed
(shared/jobs/transitions.py has the general versions and the field lists both use).

A job's common path is queued -> running -> succeeded. Done with the ORM, each step costs a
locking SELECT, an UPDATE and an event INSERT; here each is one guarded UPDATE with its event
written by the same statement (a data-modifying CTE), which triples a worker's throughput.
Anything unusual (a redelivery, a cancel, a superseded dispatch) matches no row and falls
back to the general, row-locking path (`workers.runner` calling `shared.jobs.transitions`), and
so does a job whose queue is paused (the general path holds it: shared/dispatch/queue_states.py).
tests/integration/test_transition_twins.py checks that both write the same row and events.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import text

from shared.db import session_scope
from shared.dispatch.publish import wait_for_uncommitted_job
from shared.jobs import live
from shared.jobs.status import JobStatus, can_transition
from shared.jobs.transitions import CLEARED_ON_START, CLEARED_ON_SUCCESS, Effects
from shared.webhooks import outbox as webhook_outbox

_CLAIMABLE = (JobStatus.QUEUED.value, JobStatus.RETRYING.value)
assert all(can_transition(s, JobStatus.RUNNING) for s in _CLAIMABLE)
assert can_transition(JobStatus.RUNNING, JobStatus.SUCCEEDED)


def _nulls(names: tuple[str, ...]) -> str:
    """SET items from shared.jobs.transitions' own column-name constants (no input reaches SQL)."""
    return ", ".join(f"{name} = NULL" for name in names)


_CLAIM = text(
    """
WITH claimed AS (
    UPDATE jobs SET status = 'running', attempts = attempts + 1,
        started_at = COALESCE(started_at, now()), heartbeat_at = now(),
        worker_host = :host, worker_pid = :pid, {cleared}, updated_at = now()
    WHERE id = :job_id AND dispatch_id = :dispatch_id AND status IN ('queued', 'retrying')
        AND NOT cancel_requested
        AND NOT EXISTS (SELECT 1 FROM queue_states q WHERE q.name = jobs.queue AND q.paused)
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
""".replace("{cleared}", _nulls(CLEARED_ON_START))
)

#: The job.succeeded deliveries of the job in `done`, as shared.webhooks.outbox.record writes
#: them (an owner without webhooks: one probe of ix_webhooks_owner_enabled).
_SUCCEEDED_WEBHOOKS = webhook_outbox.INSERT.format(
    event=f"'{webhook_outbox.JOB_SUCCEEDED}'",
    job_id="done.id",
    deployment_id="NULL",
    source="done, webhooks w",
    match=webhook_outbox.MATCH.format(
        owner="done.owner_id", event=f"'{webhook_outbox.JOB_SUCCEEDED}'", labels="done.labels"
    ),
)

_SUCCEED = text(
    """
WITH done AS (
    UPDATE jobs SET status = 'succeeded', result = CAST(:result AS jsonb),
        {cleared}, finished_at = now(), updated_at = now()
    WHERE id = :job_id AND dispatch_id = :dispatch_id AND status = 'running'
    RETURNING id, owner_id, attempts, kind, processor, labels
), event AS (
    INSERT INTO job_events (job_id, type, attempt, data, created_at)
    SELECT id, 'succeeded', attempts, '{}'::jsonb, now() FROM done
    RETURNING id
), hooks AS ({webhooks})
SELECT owner_id, attempts, kind, processor, (SELECT id FROM event) AS event_id,
    ARRAY(SELECT CAST(id AS text) FROM hooks) AS deliveries
FROM done
""".replace("{cleared}", _nulls(CLEARED_ON_SUCCESS)).replace("{webhooks}", _SUCCEEDED_WEBHOOKS)
)


def try_start(
    job_id: Any, dispatch_id: Any, host: str, pid: int
) -> tuple[str, dict[str, Any], int, float] | None:
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


def try_succeed(job_id: Any, dispatch_id: Any, result: dict[str, Any]) -> Effects | None:
    """Record success if this delivery still owns the running job (its metric is left to
    count, as shared.jobs.transitions.succeed leaves it); None to take the general path. Its
    webhook deliveries are recorded by the same statement and sent here, after the commit
    (the returned Effects has none left to send)."""
    with session_scope() as session:
        row = session.execute(
            _SUCCEED,
            {"job_id": job_id, "dispatch_id": dispatch_id, "result": json.dumps(result or {})},
        ).first()
    if row is None:
        return None
    live.broadcast(
        [live.message(row.event_id, job_id, "succeeded", row.attempts, {}, row.owner_id)]
    )
    if row.deliveries:
        webhook_outbox.send([uuid.UUID(delivery) for delivery in row.deliveries])
    return Effects(kind=row.kind, processor=row.processor, ended=JobStatus.SUCCEEDED.value)
