"""Job priorities and how they reach the broker.

Mechanism (see also celeryconfig.py): kombu's Redis transport keeps one list per priority
step for each queue (`files`, `files\\x06\\x163`, `files\\x06\\x166`) and a worker's BRPOP names
the lists of its queues in step order, so Redis itself hands out the lowest step with a
waiting message first. Dockyard maps `high` to step 0, `normal` to 3 and `low` to 6. With
prefetch 1 and late acks a busy worker holds no reserved backlog, so whenever a slot frees,
the next message is the highest-priority one waiting. No starvation guarantee beyond that:
a steady stream of `high` work keeps `low` work waiting.

The fleets' worker commands stay `-Q files` etc.: kombu consumes all priority lists of a
queue it consumes, and Flower sees every task (its events do not depend on the list).
"""

from __future__ import annotations

import enum

from redis import Redis


class Priority(enum.StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


#: kombu priority step per level: lower steps are popped first by the Redis transport.
STEP = {Priority.HIGH: 0, Priority.NORMAL: 3, Priority.LOW: 6}
#: The transport's steps (broker_transport_options.priority_steps).
STEPS = tuple(sorted(STEP.values()))
#: kombu's separator between a queue's name and its priority step.
SEP = "\x06\x16"
DEFAULT = Priority.NORMAL


def step_of(priority: str | None) -> int:
    return STEP[Priority(priority or DEFAULT)]


def list_name(queue: str, priority: str | None) -> str:
    """The Redis list a message of this priority waits in (kombu's `_q_for_pri`)."""
    step = step_of(priority)
    return f"{queue}{SEP}{step}" if step else queue


def list_names(queue: str) -> dict[Priority, str]:
    """Every priority level's list of a queue (queue depth per priority)."""
    return {level: list_name(queue, level) for level in Priority}


def depths(client: Redis, queue: str) -> dict[Priority, int]:
    """Messages waiting in a queue, per priority level (one round trip)."""
    pipe = client.pipeline(transaction=False)
    names = list_names(queue)
    for name in names.values():
        pipe.llen(name)
    return {level: int(size) for level, size in zip(names, pipe.execute(), strict=True)}


def depth(client: Redis, queue: str) -> int:
    """Messages waiting in a queue, all priorities together."""
    return sum(depths(client, queue).values())
