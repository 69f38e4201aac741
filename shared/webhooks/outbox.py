"""Webhook deliveries, the producer side: one `pending` row per interested webhook, written
in the transaction of the state change that causes it, and the message sent after commit.

Recording in the same transaction is what makes a delivery impossible to lose: a worker
killed between the commit and the send leaves a due `pending` row, which the dispatcher tick
(workers, beat) sends again. The message is only the fast path.

Who is interested: the owner's enabled webhooks whose `events` hold the event or `*` and
whose `labels` the job carries, every one (`job labels @> webhook labels`). A deployment has
no labels, so deployment events go only to webhooks without a label filter. The match is
one SQL condition (`MATCH`), shared with the single-statement succeed of
shared/jobs/fast_transitions.py; the owner's probe uses the partial index
ix_webhooks_owner_enabled, so an owner without webhooks costs one index lookup.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.celery_app import app as celery_app
from shared.dispatch import fast_publish, priorities, queues
from shared.webhooks.status import DeliveryStatus

log = logging.getLogger(__name__)

JOB_SUCCEEDED = "job.succeeded"
JOB_FAILED = "job.failed"
JOB_DEAD = "job.dead"
JOB_CANCELLED = "job.cancelled"
DEPLOYMENT_HEALTHY = "deployment.healthy"
DEPLOYMENT_UNHEALTHY = "deployment.unhealthy"
DEPLOYMENT_FAILED = "deployment.failed"
DEPLOYMENT_STOPPED = "deployment.stopped"
PING = "ping"
#: What a webhook may subscribe to (besides `*`); `ping` is sent on request only.
EVENTS = (
    JOB_SUCCEEDED,
    JOB_FAILED,
    JOB_DEAD,
    JOB_CANCELLED,
    DEPLOYMENT_HEALTHY,
    DEPLOYMENT_UNHEALTHY,
    DEPLOYMENT_FAILED,
    DEPLOYMENT_STOPPED,
)

#: The webhooks `w` a delivery goes to, given SQL expressions for the owner, the event (text)
#: and the subject's labels (jsonb).
MATCH = (
    "w.owner_id = {owner} AND w.enabled AND w.events ?| ARRAY[{event}, '*']"
    " AND {labels} @> w.labels"
)

#: The row a delivery starts as; `{source}` and `{match}` complete the INSERT ... SELECT.
#: (The status is the enum's constant, not input: nothing from a request is formatted in.)
INSERT = f"""
INSERT INTO webhook_deliveries
    (id, webhook_id, event_type, job_id, deployment_id, status, attempts, next_attempt_at,
     created_at, updated_at)
SELECT gen_random_uuid(), w.id, {{event}}, {{job_id}}, {{deployment_id}},
    '{DeliveryStatus.PENDING}', 0, now(), now(), now()
FROM {{source}}
WHERE {{match}}
RETURNING id
"""  # noqa: S608

_RECORD = text(
    INSERT.format(
        event="CAST(:event AS text)",
        job_id="CAST(:job_id AS uuid)",
        deployment_id="CAST(:deployment_id AS uuid)",
        source="webhooks w",
        match=MATCH.format(
            owner=":owner_id", event="CAST(:event AS text)", labels="CAST(:labels AS jsonb)"
        ),
    )
)


def record(
    session: Session,
    *,
    owner_id: uuid.UUID,
    event_type: str,
    labels: dict[str, str] | None = None,
    job_id: uuid.UUID | None = None,
    deployment_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Insert the pending deliveries of one event (one statement); their ids, to `send`
    after the commit."""
    rows = session.execute(
        _RECORD,
        {
            "owner_id": owner_id,
            "event": event_type,
            "labels": json.dumps(labels or {}),
            "job_id": job_id,
            "deployment_id": deployment_id,
        },
    )
    return [uuid.UUID(str(row[0])) for row in rows]


#: Step 0, the list a plain `send_task` uses (the dispatcher's re-sends): one list for all.
_PRIORITY = priorities.Priority.HIGH


def _message(celery: Celery, delivery_id: uuid.UUID) -> dict[str, Any]:
    task_id = str(uuid.uuid4())
    kwargs = {"delivery_id": str(delivery_id)}
    return fast_publish.task_message(
        celery,
        queues.TASK_WEBHOOK_DELIVER,
        task_id,
        kwargs,
        queues.WEBHOOKS,
        f"{{'delivery_id': '{delivery_id}'}}",
        _PRIORITY,
    )


def send(delivery_ids: Sequence[uuid.UUID], celery: Celery | None = None) -> bool:
    """After the commit: one deliver message per delivery, to the webhooks queue (one Redis
    round trip on a Redis broker). False, logged, if the broker refused: the dispatcher
    tick sends due pending deliveries again."""
    if not delivery_ids:
        return True
    celery = celery or celery_app
    try:
        if fast_publish.supports(celery):
            pipe = fast_publish.broker_client(celery).pipeline(transaction=False)
            name = priorities.list_name(queues.WEBHOOKS, _PRIORITY)
            for delivery_id in delivery_ids:
                pipe.lpush(name, json.dumps(_message(celery, delivery_id)))
            pipe.execute()
        else:
            for delivery_id in delivery_ids:
                celery.send_task(
                    queues.TASK_WEBHOOK_DELIVER,
                    kwargs={"delivery_id": str(delivery_id)},
                    queue=queues.WEBHOOKS,
                )
    except Exception:
        log.warning(
            "webhook delivery publish failed; the dispatcher will send it",
            exc_info=True,
            extra={"event": "webhook_publish_failed", "deliveries": len(delivery_ids)},
        )
        return False
    return True
