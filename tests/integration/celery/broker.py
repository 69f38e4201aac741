"""What a test's broker holds: which Redis list each task message is waiting in."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

#: kombu's separator between a queue's name and its priority step in the list's name.
PRIORITY_SEPARATOR = "\x06\x16"


@dataclass(frozen=True)
class Waiting:
    """One task message waiting in a queue's list."""

    queue: str
    list_name: str
    task: str
    task_id: str
    kwargs: dict[str, Any]


def waiting_messages(client: Redis) -> list[Waiting]:
    """Every task message in every list of the broker's database, with the queue it is in
    (a list named `files\\x06\\x163` is the `files` queue at priority step 3)."""
    found = []
    for key in client.scan_iter(count=1000):
        name = key.decode() if isinstance(key, bytes) else key
        if client.type(name) not in ("list", b"list"):
            continue
        for raw in cast(list[bytes], client.lrange(name, 0, -1)):
            message = json.loads(raw)
            headers = message["headers"]
            body = message["body"]
            if message["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            _args, kwargs, _embed = json.loads(body)
            found.append(
                Waiting(
                    queue=name.split(PRIORITY_SEPARATOR)[0],
                    list_name=name,
                    task=headers["task"],
                    task_id=headers["id"],
                    kwargs=kwargs,
                )
            )
    return found
