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

A message taken by a worker that then died before claiming the job keeps its mark, and
kombu keeps the message in its unacknowledged set until the visibility timeout. So a worker
that receives a job message writes its node name into the mark (`taken`, only if the mark
still exists), and every worker node keeps a short-lived liveness key fresh (`node_alive`).
A queued job whose mark names a node whose liveness key has expired was taken by a worker
that is gone. A live worker may hold a message unclaimed for long (a retry's countdown lets it
reserve one more message, which waits for a free pool process): its key keeps it from being
taken for lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

from redis import Redis

log = logging.getLogger(__name__)

PREFIX = "dockyard:msg:"
#: A safety net only: a mark is deleted at the claim. One that outlives its job (a message
#: dropped as superseded, a cancelled job) expires on its own.
TTL_SECONDS = 30 * 24 * 3600
NODE_PREFIX = "dockyard:node:"
#: The value of a mark no worker has taken yet.
WAITING = b"1"
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


def _mget(client: Redis, keys: list[str]) -> list[bytes | None]:
    """MGET, typed: redis-py annotates its commands for both its sync and asyncio clients
    (`Awaitable[Any] | Any`); a sync client answers a list, one value or None per key."""
    return cast("list[bytes | None]", client.mget(keys))


def marked(client: Redis, dispatch_ids: Iterable[object]) -> dict[str, bytes]:
    """Dispatch id (as a string) -> its mark's value (`1`, or the node that took the message),
    for the marks the broker still holds."""
    ids = [str(d) for d in dispatch_ids]
    held: dict[str, bytes] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        values = _mget(client, [key(d) for d in chunk])
        held.update((d, value) for d, value in zip(chunk, values, strict=True) if value is not None)
    return held


def taken(client: Redis, dispatch_id: object, node: str) -> None:
    """A worker node received this message: name it in the mark, if the mark exists (a lost
    mark must not come back without its message)."""
    client.set(key(dispatch_id), node, xx=True, keepttl=True)


def untaken(client: Redis, dispatch_id: object) -> None:
    """The message went back to its queue (a warm shutdown restores what a worker held)."""
    client.set(key(dispatch_id), 1, xx=True, keepttl=True)


def node_key(node: str) -> str:
    return f"{NODE_PREFIX}{node}"


def node_alive(client: Redis, node: str, ttl: float) -> None:
    client.set(node_key(node), 1, px=max(int(ttl * 1000), 1000))


def dead_nodes(client: Redis, nodes: Iterable[str]) -> set[str]:
    """Those of `nodes` whose liveness key has expired."""
    names = sorted(set(nodes))
    if not names:
        return set()
    values = _mget(client, [node_key(n) for n in names])
    return {name for name, value in zip(names, values, strict=True) if value is None}
