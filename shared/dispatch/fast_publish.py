"""Publishing a job message with one Redis LPUSH.

Celery's `send_task` builds the same message through several layers (routing, kombu's
producer, a Redis client object per call) and costs more CPU than the rest of a submit. For
immediate job messages on a Redis broker this module writes Celery's task protocol v2, in
kombu's Redis envelope, directly. A test decodes it with Celery's own machinery and runs it
on real workers; delayed messages (retries with a countdown) still go through Celery.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from collections.abc import Iterable
from typing import Any

from celery import Celery
from redis import Redis

from shared import redis as shared_redis
from shared.dispatch import broker_marks, priorities


def supports(celery: Celery) -> bool:
    return str(celery.conf.broker_write_url or "").startswith(("redis://", "rediss://"))


def task_message(
    celery: Celery,
    task_name: str,
    task_id: str,
    kwargs: dict[str, Any],
    queue: str,
    kwargsrepr: str,
    priority: str | None = None,
) -> dict[str, Any]:
    """Celery protocol v2 in kombu's Redis envelope (what `send_task` would LPUSH)."""
    body = json.dumps(
        [[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    return {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task_name,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": "()",
            "kwargsrepr": kwargsrepr,
            "origin": f"{os.getpid()}@{socket.gethostname()}",
            "ignore_result": None,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": celery.thread_oid,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priorities.step_of(priority),
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


def push_task_message(
    celery: Celery,
    task_name: str,
    task_id: str,
    kwargs: dict[str, Any],
    queue: str,
    kwargsrepr: str,
    priority: str | None = None,
) -> None:
    """LPUSH the message onto the queue's list, with its broker mark in the same transaction
    (see shared.dispatch.broker_marks); raises redis errors like send_task would."""
    message = task_message(celery, task_name, task_id, kwargs, queue, kwargsrepr, priority)
    push_task_messages(celery, [(queue, priority, message)])


def push_task_messages(
    celery: Celery, messages: Iterable[tuple[str, str | None, dict[str, Any]]]
) -> None:
    """(queue, priority, `task_message`) each, every message with its broker mark, in one
    MULTI transaction: one broker round trip for many jobs, all pushed or none."""
    pipe = broker_client(celery).pipeline(transaction=True)
    for queue, priority, message in messages:
        pipe.lpush(priorities.list_name(queue, priority), json.dumps(message))
        broker_marks.mark(pipe, message["headers"]["id"])
    pipe.execute()


def broker_client(celery: Celery) -> Redis:
    """This process's client of the broker's Redis database."""
    return shared_redis.broker(str(celery.conf.broker_write_url))
