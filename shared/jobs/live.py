"""Live job events: every job event, once committed, is published on Redis pub/sub for the
API's Server-Sent Events streams (api/streams.py).

Events written through the ORM (`shared.jobs.events.record`) are collected when the session
flushes and published when it commits (dropped on rollback), so a client never sees an event
that did not happen. The single-statement paths (submit, fast claim and success) broadcast
what their statement returned. Every message carries its job's owner (`owner_id`), whichever
path wrote it. Publishing is best effort: the event rows are the record, and
a client that missed a message resumes from them with Last-Event-ID.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from shared import redis as shared_redis
from shared.config import get_settings
from shared.models import Job, JobEvent

log = logging.getLogger(__name__)
CHANNEL = "dockyard:job-events"
_PENDING = "dockyard_live_events"


def message(
    event_id: int,
    job_id: uuid.UUID | str,
    type_: str,
    attempt: int | None,
    data: dict[str, Any] | None,
    owner_id: uuid.UUID | str | None = None,
) -> dict[str, Any]:
    return {
        "id": int(event_id),
        "job_id": str(job_id),
        "owner_id": str(owner_id) if owner_id else None,
        "type": type_,
        "attempt": attempt,
        "data": data or {},
        "ts": time.time(),  # when the change committed: the bench measures delivery from it
    }


def broadcast(messages: list[dict[str, Any]]) -> None:
    if not messages:
        return
    try:
        pipe = shared_redis.events(get_settings().redis_url).pipeline(transaction=False)
        for item in messages:
            pipe.publish(CHANNEL, json.dumps(item, default=str))
        pipe.execute()
    except Exception:
        log.debug("live event publish failed", exc_info=True)


_KNOWN_OWNERS: OrderedDict[uuid.UUID, uuid.UUID] = OrderedDict()
_KNOWN_OWNERS_MAX = 4096
_KNOWN_OWNERS_LOCK = threading.Lock()


def _owners(session: Session, job_ids: set[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """The owners of these jobs: from jobs the session holds, else one query (progress
    updates, for one, change the job with an UPDATE and never load it)."""
    owners: dict[uuid.UUID, uuid.UUID] = {}
    for obj in session.identity_map.values():
        # Only loaded values: touching an expired attribute would load it mid-flush.
        loaded = obj.__dict__ if isinstance(obj, Job) else {}
        if loaded.get("id") in job_ids and loaded.get("owner_id") is not None:
            owners[loaded["id"]] = loaded["owner_id"]
    missing = job_ids - owners.keys()
    with _KNOWN_OWNERS_LOCK:
        owners.update({j: _KNOWN_OWNERS[j] for j in missing & _KNOWN_OWNERS.keys()})
    missing -= owners.keys()
    if missing:
        rows = session.connection().execute(select(Job.id, Job.owner_id).where(Job.id.in_(missing)))
        owners.update({row.id: row.owner_id for row in rows})
    with _KNOWN_OWNERS_LOCK:  # a job's owner never changes: a running job's progress
        for job_id, owner in owners.items():  # events cost no query after the first
            _KNOWN_OWNERS[job_id] = owner
            _KNOWN_OWNERS.move_to_end(job_id)
        while len(_KNOWN_OWNERS) > _KNOWN_OWNERS_MAX:
            _KNOWN_OWNERS.popitem(last=False)
    return owners


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _context: Any) -> None:
    new = [obj for obj in session.new if isinstance(obj, JobEvent) and obj.id is not None]
    if not new:
        return
    owners = _owners(session, {obj.job_id for obj in new})
    session.info.setdefault(_PENDING, []).extend(
        message(obj.id, obj.job_id, obj.type, obj.attempt, obj.data, owners.get(obj.job_id))
        for obj in new
    )


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if pending:
        now = time.time()
        for item in pending:
            item["ts"] = now
        broadcast(pending)


@event.listens_for(Session, "after_soft_rollback")
def _discard(session: Session, _previous: Any) -> None:
    session.info.pop(_PENDING, None)
