"""Server-Sent Events of a deployment's live log: the clone, build and start output as the
deploy worker writes it (workers/deploy/live_log.py), step markers, and a last `outcome`.

Each line is one event: `event: step|output|outcome`, `id:` the line's id, `data:` JSON
`{text, step, at}` (an outcome's text is JSON: `{"status": "healthy", "url": ...}` or
`{"status": "failed"|"cancelled", "error": {code, message}}`). With `Last-Event-ID` (or
`?last_event_id=`) only the lines after that id are sent, so a reconnecting client misses
nothing and sees nothing twice. The table is the record: the stream reads it, woken by the
worker's message on the deployment's pub/sub channel after each write, and reads it again
every REREAD_SECONDS in case a message was missed. The stream ends after the outcome.

A deployment whose job has ended replays what is stored and closes (204 when the client has
seen it all). One deployed before the live log existed has no lines: its build log (the
job's logs) is replayed as `output` events without ids, then an outcome made from the
deployment's status (id 0). If a deployment ended without an outcome line (its worker died),
the stream makes one the same way after OUTCOME_GRACE, with the id of the last line.

Token expiry and revocation, keep-alives and the per-user stream slots are the job
streams' (api/sse.py, api/quotas.py StreamSlot).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import Blueprint, Response
from flask_jwt_extended import get_jwt, jwt_required
from sqlalchemy import func, select

from api import sse
from api.extensions import redis_client, settings
from api.identity import current_user_id
from api.operation import doc
from api.owned import load_deployment
from api.quotas import StreamSlot
from api.session import db_session
from shared.clock import now
from shared.db import session_scope
from shared.deploy import log as deploy_log
from shared.deploy.status import DeploymentStatus
from shared.models import Deployment, DeploymentLogLine, JobLog

bp = Blueprint("deployment_logs_stream", __name__, url_prefix="/deployments")
PAGE = 1000  # lines read at once (a deployment stores up to 2 MB)
REREAD_SECONDS = 1.0
#: How long a deployment may show as ended before its outcome line arrives (the worker
#: writes it once the job's outcome is recorded, a moment after the deployment's status).
OUTCOME_GRACE = 3.0
#: Job logs replayed for a deployment that has no live log (as GET /deployments/{id}/logs).
OLD_LOGS = 20


def _frame(kind: str, line_id: int | None, text: str, step: str | None, at: datetime) -> str:
    data = json.dumps({"text": text, "step": step, "at": at.isoformat()})
    head = f"id: {line_id}\n" if line_id is not None else ""
    return f"{head}event: {kind}\ndata: {data}\n\n"


def _line_frame(line: Any) -> str:
    return _frame(line.kind, line.id, line.text, line.step, line.created_at)


def _outcome_frame(outcome: dict[str, Any], line_id: int | None) -> str:
    return _frame(deploy_log.OUTCOME, line_id, json.dumps(outcome), None, now())


def _outcome(deployment: Deployment) -> dict[str, Any] | None:
    return deploy_log.outcome(
        deployment.status,
        deployment.url,
        deployment.healthy_at,
        deployment.error_code,
        deployment.error_message,
    )


def _read(deployment_id: uuid.UUID, after: int) -> tuple[list[Any], dict[str, Any] | None, float]:
    """The next lines after `after`, the deploy's outcome if its deployment has ended (else
    None), and how many seconds ago the deployment last changed."""
    with session_scope() as session:
        lines = session.execute(
            select(
                DeploymentLogLine.id,
                DeploymentLogLine.kind,
                DeploymentLogLine.step,
                DeploymentLogLine.text,
                DeploymentLogLine.created_at,
            )
            .where(DeploymentLogLine.deployment_id == deployment_id, DeploymentLogLine.id > after)
            .order_by(DeploymentLogLine.id)
            .limit(PAGE)
        ).all()
        deployment = session.get(Deployment, deployment_id)
        if deployment is None:  # deleted under the stream: nothing more will come
            return list(lines), {"status": "failed", "error": _GONE}, OUTCOME_GRACE
        quiet = (now() - deployment.updated_at).total_seconds()
        return list(lines), _outcome(deployment), quiet


_GONE = {"code": "deployment_missing", "message": "The deployment record is gone."}


def _follow(
    stream: sse.Subscription,
    deployment_id: uuid.UUID,
    after: int,
    credential: sse.Credential,
) -> Iterator[str]:
    """Replay the lines after `after`, then follow new ones until the outcome."""
    last, last_write, ended_seen = after, time.monotonic(), None
    while True:
        lines, outcome, quiet = _read(deployment_id, last)
        for line in lines:
            last = line.id
            yield _line_frame(line)
            if line.kind == deploy_log.OUTCOME:
                return
        if lines:
            last_write = time.monotonic()
            if len(lines) == PAGE:
                continue
        if outcome is not None:  # ended: the outcome line is on its way, or never comes
            ended_seen = ended_seen or time.monotonic()
            if max(quiet, time.monotonic() - ended_seen) >= OUTCOME_GRACE:
                yield _outcome_frame(outcome, last)
                return
        reason = credential.ended()
        if reason is not None:
            yield sse.ending(reason)
            return
        if stream.slot is not None:
            stream.slot.refresh()
        if stream.pubsub.get_message(timeout=min(credential.wait(), REREAD_SECONDS)):
            while stream.pubsub.get_message(timeout=0):  # one read serves every wake-up
                pass
        elif time.monotonic() - last_write >= sse.KEEPALIVE_SECONDS:
            last_write = time.monotonic()
            yield sse.KEEPALIVE


def _events(stream: sse.Subscription, frames: Iterator[str]) -> Iterator[str]:
    try:
        yield sse.RETRY
        yield from frames
    finally:
        stream.close()


def _old_build_log(deployment: Deployment) -> Iterator[str]:
    """A deployment from before the live log: its job's logs as output lines (no ids: they
    are not lines of the live log), then its outcome with id 0."""
    with session_scope() as session:
        logs = list(
            session.execute(
                select(JobLog.source, JobLog.content, JobLog.created_at)
                .where(JobLog.job_id == deployment.job_id)
                .order_by(JobLog.id)
                .limit(OLD_LOGS)
            )
        )
    for source, content, created_at in logs:
        step = "health_check" if source == "app" else source  # the app's output at its check
        for text in content.splitlines():
            yield _frame(deploy_log.OUTPUT, None, text, step, created_at)
    yield _outcome_frame(_outcome(deployment) or {}, 0)


def _stored(deployment_id: uuid.UUID, after: int) -> tuple[bool, bool, bool]:
    """Whether the deployment has any line, an outcome line, and lines after `after`."""
    line = DeploymentLogLine
    with session_scope() as session:
        any_line, outcome_line, newer = session.execute(
            select(
                func.count(line.id) > 0,
                func.count(line.id).filter(line.kind == deploy_log.OUTCOME) > 0,
                func.count(line.id).filter(line.id > after) > 0,
            ).where(line.deployment_id == deployment_id)
        ).one()
    return bool(any_line), bool(outcome_line), bool(newer)


@bp.get("/<uuid:deployment_id>/logs/stream")
@jwt_required()
@doc(
    summary="Server-Sent Events of the deployment's clone, build and start output, step "
    "markers and a last outcome (Last-Event-ID resumes); a finished deployment's log is "
    "replayed, 204 when nothing is left to send",
    tags=["deployments"],
    errors=(401, 404, 422, 429),
    content_type="text/event-stream",
    also=(204,),  # a finished log, all seen
    parameters=sse.LAST_EVENT_ID,
)
def deployment_log_stream(deployment_id: uuid.UUID) -> Response:
    """Take a stream slot (429 past the limit) and subscribe before reading the table, so
    no line written in between is missed."""
    deployment = load_deployment(deployment_id)  # 404 for someone else's
    db_session().expunge(deployment)
    db_session().close()  # a stream lasts minutes: no transaction held open meanwhile
    after = sse.last_event_id()
    credential = sse.Credential(get_jwt())
    stream = sse.Subscription(StreamSlot.take(settings(), redis_client(), current_user_id()))
    try:
        stream.pubsub.subscribe(deploy_log.channel(deployment.id))
        ended = deployment.status != DeploymentStatus.STARTING
        any_line, outcome_line, newer = _stored(deployment.id, after or 0)
    except BaseException:
        stream.close()
        raise
    settled = outcome_line or (now() - deployment.updated_at).total_seconds() >= OUTCOME_GRACE
    if ended and after is not None and not newer and (settled or not any_line):
        stream.close()  # the client has it all; 204 stops a browser's reconnecting
        return Response(status=204)
    if ended and not any_line:
        frames = _old_build_log(deployment)
    else:
        frames = _follow(stream, deployment.id, after or 0, credential)
    response = sse.response(_events(stream, frames))
    response.call_on_close(stream.close)  # also when the generator never starts
    return response
