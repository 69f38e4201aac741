"""A worker node's side of paused queues (shared/dispatch/queue_states.py): it stops consuming a
paused queue of its fleet and starts again on resume, so its processes take no new work
and do not churn on messages the claim would only hold back.

Three ways the node learns the stored state, all in its main process:
- as it starts (`worker_ready`, sent in the consumer's own thread before its event loop
  first asks the broker for a message): paused queues are cancelled before any is taken;
- the API's broadcast on pause and resume (the `dockyard_queue_state` control command,
  run by the consumer like Celery's own add_consumer / cancel_consumer);
- a periodic check from the liveness thread (`refresh`): if what the node consumes differs
  from the stored state (a broadcast lost while the broker was down), the node sends the
  command to itself, so the consumer changes only ever happen in the consumer's thread.

A node only ever touches the queues it was started with (`-Q`): a resume never makes a
`files` worker consume `deploy`.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from celery.utils.serialization import strtobool
from celery.worker.control import control_command
from redis import Redis

from shared.celery_app import app
from shared.db import session_scope
from shared.dispatch import fast_publish, queue_states, queue_workers

log = logging.getLogger(__name__)

#: The queues this node was started with, in its fleet's order, and its name (set once it
#: is ready).
_home: tuple[str, ...] = ()
_node = ""


def _stored_pauses() -> set[str]:
    with session_scope() as session:
        return queue_states.paused_names(session)


@worker_ready.connect
def _start_unpaused_only(sender: Any = None, **_: Any) -> None:
    """Runs in the consumer's thread before it fetches anything: cancel paused queues now."""
    global _home, _node
    if sender is None:
        return
    _home, _node = tuple(sender.app.amqp.queues.consume_from), sender.hostname
    try:
        paused = _stored_pauses()
    except Exception:  # the database is down: the claim still holds paused jobs back
        log.warning(
            "queue states not read at start", exc_info=True, extra={"event": "queue_states"}
        )
        return
    for queue in _home:
        if queue in paused:
            sender.cancel_task_queue(queue)
            log.info("queue paused: not consuming %s", queue, extra={"event": "queue_paused"})


def _ok(text: str) -> dict[str, str]:
    """A control command's success reply, the shape of Celery's own `control.ok` (which
    celery-types does not declare)."""
    return {"ok": text}


@control_command(args=[("queue", str), ("paused", strtobool)], signature="<queue> <paused>")
def dockyard_queue_state(state: Any, queue: str, paused: bool, **_: Any) -> dict[str, str]:
    """Stop (paused) or start consuming `queue`, if it is one of this node's own queues."""
    if queue not in _home:
        return _ok(f"{queue} is not served here")
    consumer = state.consumer
    if paused:
        consumer.call_soon(consumer.cancel_task_queue, queue)
    else:
        consumer.call_soon(consumer.add_task_queue, queue)
    return _ok(f"{queue} {'paused' if paused else 'resumed'}")


def refresh(broker: Redis, node: str, ttl: float) -> None:
    """From the liveness thread: say which queues this node serves, and heal a consumer
    that disagrees with the stored state."""
    if not _home:
        return
    queue_workers.serving(broker, node, _home, ttl)
    paused = _stored_pauses()
    consuming = set(list(app.amqp.queues.consume_from))
    for queue in _home:
        if (queue in paused) == (queue in consuming):
            queue_states.announce(app, queue, queue in paused, destination=[node])


@worker_shutdown.connect
def _leave(**_: Any) -> None:
    if not _home or not fast_publish.supports(app):
        return
    try:
        queue_workers.gone(fast_publish.broker_client(app), _node, _home)
    except Exception:
        log.debug("queue workers entry not removed; it expires", exc_info=True)
