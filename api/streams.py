"""Server-Sent Events: a job's live events, or all of the caller's jobs' events.

Fed by Redis pub/sub (shared/jobs/live.py). With `Last-Event-ID` (or `?last_event_id=`), the
events after that id are replayed from the job_events table first, so a reconnecting client
misses nothing; live messages already replayed are skipped. A user only ever receives events
of their own jobs (admins: of any job on the per-job stream). Each open stream holds one
server thread: size gunicorn's `--threads` for the number of watchers.

A stream lives no longer than the token it was opened with (api/sse.py, shared with the
deployment log stream): it ends with a `token_expired` / `token_revoked` event.

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
import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response
from flask_jwt_extended import get_jwt, jwt_required
from sqlalchemy import select

from api import sse
from api.extensions import redis_client, settings
from api.identity import current_user_id
from api.operation import doc
from api.owned import load_job
from api.quotas import StreamSlot
from shared.db import session_scope
from shared.jobs import events, live
from shared.jobs.status import TERMINAL
from shared.models import Job, JobEvent

bp = Blueprint("streams", __name__, url_prefix="/jobs")
REPLAY_LIMIT = 5000
#: The event types that end a job (its status becomes succeeded, failed, dead, cancelled).
TERMINAL_EVENTS = frozenset(
    {events.SUCCEEDED, events.FAILED, events.DEAD_LETTERED, events.CANCELLED}
)


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


def _events(
    stream: sse.Subscription,
    job_id: uuid.UUID | None,
    owner: uuid.UUID,
    replay: list[dict[str, Any]],
    end_after_replay: bool,
    credential: sse.Credential,
) -> Iterator[str]:
    owners = _Owners(owner)
    try:
        yield sse.RETRY
        replayed = {item["id"] for item in replay}
        for item in replay:
            yield _frame(item)
        if end_after_replay:
            return
        last_write = time.monotonic()
        while True:
            reason = credential.ended()
            if reason is not None:
                yield sse.ending(reason)
                return
            if stream.slot is not None:
                stream.slot.refresh()
            message = stream.pubsub.get_message(timeout=credential.wait())
            if message is None:
                if time.monotonic() - last_write >= sse.KEEPALIVE_SECONDS:
                    last_write = time.monotonic()
                    yield sse.KEEPALIVE
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
    after = sse.last_event_id()
    credential = sse.Credential(get_jwt())
    slot = StreamSlot.take(settings(), redis_client(), current_user_id())
    stream = sse.Subscription(slot)
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
    response = sse.response(_events(stream, job_id, owner, replay, end_after_replay, credential))
    # Also when the generator never starts (the client left before the first byte).
    response.call_on_close(stream.close)
    return response


@bp.get("/<uuid:job_id>/stream")
@jwt_required()
@doc(
    summary="Server-Sent Events of one job (Last-Event-ID resumes); ends after the job's "
    "terminal event, 204 if it has ended and nothing is left to send",
    tags=["jobs"],
    errors=(404, 422, 429),
    content_type="text/event-stream",
    also=(204,),  # an ended job, nothing left to send
    parameters=sse.LAST_EVENT_ID,
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
    parameters=sse.LAST_EVENT_ID,
)
def my_stream() -> Response:
    return _open(None, current_user_id())
