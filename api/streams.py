"""Server-Sent Events: a job's live events, or all of the caller's jobs' events.

Fed by Redis pub/sub (shared/live.py). With `Last-Event-ID` (or `?last_event_id=`), the
events after that id are replayed from the job_events table first, so a reconnecting client
misses nothing; live messages already replayed are skipped. A user only ever receives events
of their own jobs (admins: of any job on the per-job stream). Each open stream holds one
server thread: size gunicorn's `--threads` for the number of watchers.

A stream lives no longer than the token it was opened with: when the token expires, or is
revoked by a logout (checked every AUTH_RECHECK_SECONDS), the stream sends a last
`token_expired` / `token_revoked` event and ends; the client reconnects with a fresh token.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, request, stream_with_context
from flask_jwt_extended import get_jwt, jwt_required
from sqlalchemy import select

from api.auth import current_user_id, token_revoked
from api.errors import ApiError
from api.jobs import load_job, settings
from api.openapi import doc
from shared import live, metrics
from shared.db import session_scope
from shared.models import Job, JobEvent

log = logging.getLogger(__name__)
bp = Blueprint("streams", __name__, url_prefix="/jobs")
KEEPALIVE_SECONDS = 15.0
AUTH_RECHECK_SECONDS = 5.0  # a revoked token's stream ends within this (one Redis EXISTS)
REPLAY_LIMIT = 5000


def _last_event_id() -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise ApiError(422, "invalid_last_event_id", "Last-Event-ID must be an event id.")
    return int(raw)


def _frame(item: dict[str, Any]) -> str:
    return f"id: {item['id']}\nevent: {item['type']}\ndata: {json.dumps(item, default=str)}\n\n"


def _replay(after: int, job_id: uuid.UUID | None, owner: uuid.UUID) -> list[dict[str, Any]]:
    query = select(JobEvent, Job.owner_id).join(Job, Job.id == JobEvent.job_id)
    query = query.where(JobEvent.id > after)
    query = query.where(JobEvent.job_id == job_id) if job_id else query.where(Job.owner_id == owner)
    with session_scope() as session:
        rows = session.execute(query.order_by(JobEvent.id).limit(REPLAY_LIMIT)).all()
        return [
            live.message(e.id, e.job_id, e.type, e.attempt, e.data, owner_id) | {"replayed": True}
            for e, owner_id in rows
        ]


class _Owners:
    """Which jobs belong to the watching user; one query per job not seen before."""

    def __init__(self, owner: uuid.UUID) -> None:
        self.owner = str(owner)
        self.known: dict[str, bool] = {}

    def mine(self, item: dict[str, Any]) -> bool:
        job_id = item["job_id"]
        if item.get("owner_id"):
            self.known[job_id] = item["owner_id"] == self.owner
        if job_id not in self.known:
            with session_scope() as session:
                owner = session.scalar(select(Job.owner_id).where(Job.id == uuid.UUID(job_id)))
            self.known[job_id] = str(owner) == self.owner
        return self.known[job_id]


class _Credential:
    """The token a stream was opened with, checked while the stream lasts."""

    def __init__(self, claims: dict[str, Any]) -> None:
        self.jti = claims["jti"]
        self.expires_at = float(claims["exp"])
        self.checked_at = time.monotonic()

    def ended(self) -> str | None:
        """Why the stream must end now (an event type), or None."""
        if time.time() >= self.expires_at:
            return "token_expired"
        if time.monotonic() - self.checked_at < AUTH_RECHECK_SECONDS:
            return None
        self.checked_at = time.monotonic()
        try:
            return "token_revoked" if token_revoked(self.jti) else None
        except Exception:  # fail closed, like every request: unverifiable ends the stream
            log.warning("stream token check failed", exc_info=True, extra={"event": "stream"})
            return "token_unverifiable"

    def wait(self) -> float:
        """How long to wait for a message before the token must be looked at again."""
        until_expiry = max(0.05, self.expires_at - time.time())
        return min(AUTH_RECHECK_SECONDS, KEEPALIVE_SECONDS, until_expiry)


def _events(
    job_id: uuid.UUID | None, owner: uuid.UUID, after: int | None, credential: _Credential
) -> Iterator[str]:
    pubsub = metrics.client(settings().redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(live.CHANNEL)  # before the replay, so nothing falls in between
    owners = _Owners(owner)
    try:
        yield "retry: 2000\n\n"
        replayed: set[int] = set()
        if after is not None:
            for item in _replay(after, job_id, owner):
                replayed.add(item["id"])
                yield _frame(item)
        last_write = time.monotonic()
        while True:
            reason = credential.ended()
            if reason is not None:
                # No id: the client's Last-Event-ID stays that of the last job event.
                yield f"event: {reason}\ndata: {json.dumps({'reason': reason})}\n\n"
                return
            message = pubsub.get_message(timeout=credential.wait())
            if message is None:
                if time.monotonic() - last_write >= KEEPALIVE_SECONDS:
                    last_write = time.monotonic()
                    yield ": keep-alive\n\n"
                continue
            item = json.loads(message["data"])
            if item["id"] in replayed:
                continue
            if job_id is not None:
                if item["job_id"] != str(job_id):
                    continue
            elif not owners.mine(item):
                continue
            last_write = time.monotonic()
            yield _frame(item)
    finally:
        pubsub.close()


def _response(events: Iterator[str]) -> Response:
    response = Response(stream_with_context(events), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return response


@bp.get("/<uuid:job_id>/stream")
@jwt_required()
@doc(
    summary="Server-Sent Events of one job (Last-Event-ID resumes)",
    tags=["jobs"],
    errors=(404,),
    content_type="text/event-stream",
)
def job_stream(job_id: uuid.UUID) -> Response:
    job = load_job(job_id)  # 404 for someone else's job
    return _response(_events(job.id, job.owner_id, _last_event_id(), _Credential(get_jwt())))


@bp.get("/stream")
@jwt_required()
@doc(
    summary="Server-Sent Events of all your jobs (Last-Event-ID resumes)",
    tags=["jobs"],
    content_type="text/event-stream",
)
def my_stream() -> Response:
    return _response(_events(None, current_user_id(), _last_event_id(), _Credential(get_jwt())))
