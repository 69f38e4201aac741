"""Marks in the broker saying "this job message is still held", so lost messages can be told
from waiting ones.

Redis loses writes: a restart without persistence, the last second of an `appendfsync
everysec` file, a replica promoted after a failover. PostgreSQL still says such a job is
`queued` or `retrying`, but nothing in the broker will ever deliver it. Scanning the queues to
find out would cost a pass over the whole backlog on every sweep; instead every job message is
written together with a small mark key (`dockyard:msg:<dispatch id>`) in the same Redis
database and the same MULTI transaction, so the two survive or vanish together (Redis writes a
transaction to its append-only file and to replicas as one unit). The worker deletes the mark
once it has claimed the job. A published, unclaimed job whose current dispatch has no mark lost
its message; checking that is one MGET per batch of jobs however long the backlog is.

A message taken by a worker that then died before claiming the job keeps its mark; kombu keeps
such a message in its `unacked` hash (with the time it was taken in `unacked_index`) until the
visibility timeout. `taken_at` reads those (the fleets' in-flight messages and the retries
waiting out their backoff in a worker, not the backlog) so the sweep can redispatch a job
whose message has sat taken but unclaimed for longer than any live worker takes to claim.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from redis import Redis

log = logging.getLogger(__name__)

PREFIX = "dockyard:msg:"
#: A safety net only: a mark is deleted at the claim. One that outlives its job (a message
#: dropped as superseded, a cancelled job) expires on its own.
TTL_SECONDS = 30 * 24 * 3600
#: kombu's Redis transport keeps taken-but-unacknowledged messages here (no key prefix is
#: configured for the broker).
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
_CHUNK = 500


def key(dispatch_id: object) -> str:
    return f"{PREFIX}{dispatch_id}"


def mark(client: Redis | Any, dispatch_id: object) -> None:
    """Add the mark (a pipeline may be passed to write it with the message)."""
    client.set(key(dispatch_id), 1, ex=TTL_SECONDS)


def unmark(client: Redis, dispatch_id: object) -> None:
    """Best effort: a mark left behind only expires later."""
    try:
        client.delete(key(dispatch_id))
    except Exception:
        log.debug("broker mark not removed", exc_info=True)


def marked(client: Redis, dispatch_ids: Iterable[object]) -> set[str]:
    """The dispatch ids (as strings) whose mark the broker still holds."""
    ids = [str(d) for d in dispatch_ids]
    held: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        values = client.mget([key(d) for d in chunk])
        held.update(d for d, value in zip(chunk, values, strict=True) if value is not None)
    return held


def taken_at(client: Redis) -> dict[str, float]:
    """Dispatch id -> when a worker took the message, for every message taken and not yet
    acknowledged (kombu's unacked hash; a task's id is its job's dispatch id)."""
    tags = dict(client.zrange(UNACKED_INDEX, 0, -1, withscores=True))
    if not tags:
        return {}
    taken: dict[str, float] = {}
    for tag, raw in client.hgetall(UNACKED).items():
        try:
            envelope = json.loads(raw)[0]
            task_id = envelope["headers"]["id"]
        except (ValueError, LookupError, TypeError):
            continue
        if tag in tags:
            taken[str(task_id)] = float(tags[tag])
    return taken
