"""The body of a webhook delivery: `{id, type, created_at, data}` (README, Webhooks).

`data` is the job or the deployment exactly as the API shows it (shared/schemas/responses.py, the
schemas the API answers with), read when the body is rendered: the webhooks worker renders
it at the first attempt and keeps the bytes, so every retry sends and signs the same body.
A `ping` has no subject: its data names the webhook. A subject deleted before the first
attempt renders as `null`.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from shared.models import Deployment, Job, WebhookDelivery
from shared.schemas.responses import DeploymentSchema, JobSchema
from shared.webhooks.outbox import PING

_JOB = JobSchema()
_DEPLOYMENT = DeploymentSchema()


def _data(session: Session, delivery: WebhookDelivery) -> Any:
    if delivery.job_id is not None:
        job = session.get(Job, delivery.job_id)
        return None if job is None else _JOB.dump(job)
    if delivery.deployment_id is not None:
        deployment = session.get(Deployment, delivery.deployment_id)
        return None if deployment is None else _DEPLOYMENT.dump(deployment)
    if delivery.event_type == PING:
        return {"webhook_id": str(delivery.webhook_id)}
    return None


def render(session: Session, delivery: WebhookDelivery) -> bytes:
    """The JSON body of `delivery` (compact, UTF-8)."""
    body = {
        "id": str(delivery.id),
        "type": delivery.event_type,
        "created_at": delivery.created_at.isoformat(),
        "data": _data(session, delivery),
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
