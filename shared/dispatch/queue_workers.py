"""Which live worker nodes serve which queue, for the operator's queue listing.

Each worker node refreshes, with its liveness key (workers/liveness.py), one sorted-set entry
per queue of its fleet (`dockyard:queue-workers:<queue>`: node -> expiry time). Reading a
queue's workers is one range query, however many other keys the broker's database holds
(a SCAN of node keys would walk every job message's mark). A node that stops refreshing
drops out after HEARTBEAT_STALE_AFTER, like its liveness key.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import cast

from redis import Redis

PREFIX = "dockyard:queue-workers:"


def key(queue: str) -> str:
    return f"{PREFIX}{queue}"


def serving(client: Redis, node: str, queues: Iterable[str], ttl: float) -> None:
    """`node` is alive and serves `queues` for the next `ttl` seconds."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.zadd(key(queue), {node: now + ttl})
        pipe.zremrangebyscore(key(queue), "-inf", now)
        pipe.expire(key(queue), max(int(ttl * 2), 1))
    pipe.execute()


def live(client: Redis, queue: str) -> list[str]:
    """The nodes serving `queue` now, by name."""
    nodes = cast("list[bytes]", client.zrangebyscore(key(queue), time.time(), "+inf"))
    return sorted(node.decode() for node in nodes)


def gone(client: Redis, node: str, queues: Iterable[str]) -> None:
    """`node` shut down cleanly: it serves nothing any more."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.zrem(key(queue), node)
    pipe.execute()
