"""The live deploy log's shared vocabulary: its line kinds, the pub/sub channel that wakes its
streams, and the outcome line's body.

The deploy worker writes a deployment's lines (workers/deploy/live_log.py) and the API
streams them (api/deployment_logs_stream.py). The table is the record; the channel only
says "there is more", so a stream that misses a message loses nothing but a little time.
The outcome is built here because both sides make one: the worker when the deploy job ends,
the API for a deployment finished without one (deployed before the live log existed, or its
worker died before it could write it).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from shared.deploy.status import DeploymentStatus

STEP = "step"
OUTPUT = "output"
OUTCOME = "outcome"
KINDS = (STEP, OUTPUT, OUTCOME)


def channel(deployment_id: uuid.UUID | str) -> str:
    """The Redis pub/sub channel a deployment's new lines are announced on."""
    return f"deploy-log:{deployment_id}"


def outcome(
    status: str,
    url: str | None,
    healthy_at: datetime | None,
    error_code: str | None,
    error_message: str | None,
) -> dict[str, Any] | None:
    """The outcome of the deploy that made a deployment in this state, or None while its job
    still runs (`starting`). A deployment that came up answers `healthy` with its URL even
    when it has since been stopped: the outcome is the deploy's, not today's state."""
    if status == DeploymentStatus.STARTING:
        return None
    if status == DeploymentStatus.FAILED:
        return {
            "status": "failed",
            "error": {
                "code": error_code or "deploy_failed",
                "message": error_message or "The deploy failed.",
            },
        }
    if status == DeploymentStatus.STOPPED and healthy_at is None:
        return {
            "status": "cancelled",
            "error": {
                "code": error_code or "cancelled",
                "message": error_message or "The deploy job was cancelled.",
            },
        }
    return {"status": "healthy", "url": url}
