"""Server-Sent Events: a job's live events, or all of the caller's jobs' events.

Fed by Redis pub/sub (shared/live.py). With `Last-Event-ID` (or `?last_event_id=`), the
events after that id are replayed from the job_events table first, so a reconnecting client
misses nothing; live messages already replayed are skipped. A user only ever receives events
of their own jobs (admins: of any job on the per-job stream). Each open stream holds one
server thread: size gunicorn's `--threads` for the number of watchers.

A stream lives no longer than the token it was opened with: when the token expires, or is
revoked by a logout (checked every AUTH_RECHECK_SECONDS), the stream sends a last
`token_expired` / `token_revoked` event and ends; the client reconnects with a fresh token.

A per-job stream ends after the job's terminal event (succeeded, failed, dead_lettered,
cancelled). Opened on a job that has already ended, it replays what Last-Event-ID asks for
and ends, or answers 204 when there is nothing to send (which tells a browser's EventSource
to stop reconnecting). A job retried later is followed by opening its stream again.

Each user holds at most MAX_STREAMS_PER_USER open streams (api.quotas.StreamSlot): 429
`too_many_streams` past it; a stream frees its slot when it ends, when its client goes away
(noticed at the next write, within KEEPALIVE_SECONDS) or, if its process dies, when the
slot's expiry passes (STREAM_SLOT_TTL).
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
from redis.client import PubSub
from sqlalchemy import select

from api.auth import current_user_id, token_revoked
from api.errors import ApiError
from api.extensions import redis_client, settings
from api.jobs import load_job
from api.openapi import doc
from api.quotas import StreamSlot
from shared import events, live
from shared import redis as shared_redis
from shared.db import session_scope
from shared.models import Job, JobEvent
from shared.status import TERMINAL

log = logging.getLogger(__name__)
bp = Blueprint("streams", __name__, url_prefix="/jobs")
KEEPALIVE_SECONDS = 15.0
AUTH_RECHECK_SECONDS = 5.0  # a revoked token's stream ends within this (one Redis EXISTS)
REPLAY_LIMIT = 5000
#: The event types that end a job (its status becomes succeeded, failed, dead, cancelled).
TERMINAL_EVENTS = frozenset(
    {events.SUCCEEDED, events.FAILED, events.DEAD_LETTERED, events.CANCELLED}
)


def _last_event_id() -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    if raw is None or raw == "":
        return None
    # isascii: str.isdigit() also accepts digits int() refuses ("²"), which answered 500.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
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
        self.claims = dict(claims)
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
            return "token_revoked" if token_revoked(self.claims) else None
        except Exception:  # fail closed, like every request: unverifiable ends the stream
            log.warning("stream token check failed", exc_info=True, extra={"event": "stream"})
            return "token_unverifiable"

    def wait(self) -> float:
        """How long to wait for a message before the token must be looked at again."""
        until_expiry = max(0.05, self.expires_at - time.time())
        return min(AUTH_RECHECK_SECONDS, KEEPALIVE_SECONDS, until_expiry)


class _Stream:
    """What one open stream holds (a Redis subscription and a stream slot), released once."""

    def __init__(self, slot: StreamSlot | None) -> None:
        self.slot = slot
        self.pubsub: PubSub = shared_redis.events(settings().redis_url).pubsub(
            ignore_subscribe_messages=True
        )

    def close(self) -> None:
        self.pubsub.close()
        if self.slot is not None:
            self.slot.release()
            self.slot = None


def _events(
    stream: _Stream,
    job_id: uuid.UUID | None,
    owner: uuid.UUID,
    replay: list[dict[str, Any]],
    end_after_replay: bool,
    credential: _Credential,
) -> Iterator[str]:
    owners = _Owners(owner)
    try:
        yield "retry: 2000\n\n"
        replayed = {item["id"] for item in replay}
        for item in replay:
            yield _frame(item)
        if end_after_replay:
            return
        last_write = time.monotonic()
        while True:
            reason = credential.ended()
            if reason is not None:
                # No id: the client's Last-Event-ID stays that of the last job event.
                yield f"event: {reason}\ndata: {json.dumps({'reason': reason})}\n\n"
                return
            if stream.slot is not None:
                stream.slot.refresh()
            message = stream.pubsub.get_message(timeout=credential.wait())
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
            if job_id is not None and item["type"] in TERMINAL_EVENTS:
                return  # the job has ended; a retry is followed by a new stream
    finally:
        stream.close()


def _job_ended(job_id: uuid.UUID) -> bool:
    with session_scope() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
    return status is None or status in {s.value for s in TERMINAL}


def _open(job_id: uuid.UUID | None, owner: uuid.UUID) -> Response:
    """Take a stream slot (429 past the limit), subscribe, then read the history, in that
    order so no event falls between them; a finished job's stream ends after its replay."""
    after = _last_event_id()
    credential = _Credential(get_jwt())
    slot = StreamSlot.take(settings(), redis_client(), current_user_id())
    stream = _Stream(slot)
    try:
        stream.pubsub.subscribe(live.CHANNEL)  # before the history: nothing falls in between
        # The status is read before the replay: a job that ends in between has its
        # terminal event in the replay, and one that ends later sends it live.
        ended = job_id is not None and _job_ended(job_id)
        replay = _replay(after, job_id, owner) if after is not None else []
    except BaseException:
        stream.close()
        raise
    if ended and not replay:
        stream.close()
        return Response(status=204)
    end_after_replay = job_id is not None and (
        ended or bool(replay and replay[-1]["type"] in TERMINAL_EVENTS)
    )
    response = _response(_events(stream, job_id, owner, replay, end_after_replay, credential))
    # Also when the generator never starts (the client left before the first byte).
    response.call_on_close(stream.close)
    return response


def _response(events_: Iterator[str]) -> Response:
    response = Response(stream_with_context(events_), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return response


@bp.get("/<uuid:job_id>/stream")
@jwt_required()
@doc(
    summary="Server-Sent Events of one job (Last-Event-ID resumes); ends after the job's "
    "terminal event, 204 if it has ended and nothing is left to send",
    tags=["jobs"],
    errors=(404, 422, 429),
    content_type="text/event-stream",
)
def job_stream(job_id: uuid.UUID) -> Response:
    job = load_job(job_id)  # 404 for someone else's job
    return _open(job.id, job.owner_id)


@bp.get("/stream")
@jwt_required()
@doc(
    summary="Server-Sent Events of all your jobs (Last-Event-ID resumes)",
    tags=["jobs"],
    errors=(422, 429),
    content_type="text/event-stream",
)
def my_stream() -> Response:
    return _open(None, current_user_id())
