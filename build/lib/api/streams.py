"""Server-Sent Events: a job's live events, or all of the caller's jobs' events.

Fed by Redis pub/sub (shared/live.py). With `Last-Event-ID` (or `?last_event_id=`), the
events after that id are replayed from the job_events table first, so a reconnecting client
misses nothing; live messages already replayed are skipped. A user only ever receives events
of their own jobs (admins: of any job on the per-job stream). Each open stream holds one
server thread: size gunicorn's `--threads` for the number of watchers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, request, stream_with_context
from flask_jwt_extended import jwt_required
from sqlalchemy import select

from api.auth import current_user_id
from api.errors import ApiError
from api.jobs import load_job, settings
from api.openapi import doc
from shared import live, metrics
from shared.db import session_scope
from shared.models import Job, JobEvent

bp = Blueprint("streams", __name__, url_prefix="/jobs")
KEEPALIVE_SECONDS = 15.0
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


def _events(job_id: uuid.UUID | None, owner: uuid.UUID, after: int | None) -> Iterator[str]:
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
        while True:
            message = pubsub.get_message(timeout=KEEPALIVE_SECONDS)
            if message is None:
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
    return _response(_events(job.id, job.owner_id, _last_event_id()))


@bp.get("/stream")
@jwt_required()
@doc(
    summary="Server-Sent Events of all your jobs (Last-Event-ID resumes)",
    tags=["jobs"],
    content_type="text/event-stream",
)
def my_stream() -> Response:
    return _response(_events(None, current_user_id(), _last_event_id()))
