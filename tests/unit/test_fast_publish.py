"""The one-LPUSH publisher writes the message Celery's own send_task would."""

from __future__ import annotations

import base64
import json
import uuid

from kombu import Connection

from shared.celery_app import make_celery
from shared.dispatch import fast_publish, queues


def test_message_matches_celerys_own() -> None:
    celery = make_celery()
    # The envelope owes nothing to the result backend; the configured one (PostgreSQL) would
    # connect on first use to create its tables, and a unit test reaches no service.
    celery.conf.result_backend = "cache+memory://"
    task_id = str(uuid.uuid4())
    kwargs = {"job_id": "j", "dispatch_id": task_id, "request_id": "r"}
    with Connection("memory://") as connection:
        # kombu's virtual transports (memory, Redis) store the same envelope per message.
        celery.send_task(
            queues.TASK_DIAGNOSTIC,
            kwargs=kwargs,
            queue=queues.DIAGNOSTICS,
            task_id=task_id,
            connection=connection,
            argsrepr="()",
            kwargsrepr="{}",
            priority=3,
        )
        theirs = connection.default_channel._get(queues.DIAGNOSTICS)
    ours = fast_publish.task_message(
        celery, queues.TASK_DIAGNOSTIC, task_id, kwargs, queues.DIAGNOSTICS, "{}", "normal"
    )
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(
        base64.b64decode(theirs["body"])
    )
    assert set(ours) == set(theirs)
    assert set(ours["headers"]) == set(theirs["headers"])
    for key, value in theirs["headers"].items():
        if key != "origin":  # process id and host of the publisher
            assert ours["headers"][key] == value, key
    for key in ("correlation_id", "delivery_mode", "priority", "body_encoding", "delivery_info"):
        assert ours["properties"][key] == theirs["properties"][key], key
