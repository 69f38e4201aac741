"""What a worker node tells the broker about itself, so the maintenance sweep can tell a
message held by a live worker from one taken by a worker that died before claiming its job
(shared/dispatch/broker_marks.py explains the marks).

All of it runs in the worker's main process, which receives the messages: a liveness key per
node, refreshed every `HEARTBEAT_INTERVAL` and expiring after `HEARTBEAT_STALE_AFTER` (with
the queues it serves and its check of paused queues: workers/queue_pause.py); the
node's name written into a job message's mark as the message arrives; and, at a warm
shutdown, the marks of messages it held without running them set back to waiting, because
kombu puts those messages back in their queue.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import task_received, worker_ready, worker_shutdown
from celery.worker import state as worker_state

from shared.celery_app import app
from shared.config import get_settings
from shared.dispatch import broker_marks, fast_publish
from workers import queue_pause

log = logging.getLogger(__name__)
_stop = threading.Event()


def _broker() -> Any | None:
    return fast_publish.broker_client(app) if fast_publish.supports(app) else None


def _keep_alive(node: str) -> None:
    settings = get_settings()
    while True:
        broker = _broker()
        if broker is None:
            return
        try:
            broker_marks.node_alive(broker, node, settings.heartbeat_stale_after)
        except Exception:
            log.warning("node liveness not written", exc_info=True, extra={"event": "liveness"})
        try:
            queue_pause.refresh(broker, node, settings.heartbeat_stale_after)
        except Exception:
            log.warning("queue states not checked", exc_info=True, extra={"event": "liveness"})
        if _stop.wait(settings.heartbeat_interval):
            return


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    node = getattr(sender, "hostname", None)
    if node:
        threading.Thread(
            target=_keep_alive, args=(node,), name="dockyard-liveness", daemon=True
        ).start()


@task_received.connect
def _taken(request: Any = None, **_: Any) -> None:
    broker = _broker()
    if broker is None or request is None:
        return
    try:
        broker_marks.taken(broker, request.id, request.hostname)
    except Exception:
        log.debug("mark not updated on receipt", exc_info=True)


@worker_shutdown.connect
def _give_back(**_: Any) -> None:
    _stop.set()
    broker = _broker()
    if broker is None:
        return
    active = {request.id for request in worker_state.active_requests}
    for request in list(worker_state.reserved_requests):
        if request.id not in active:
            try:
                broker_marks.untaken(broker, request.id)
            except Exception:
                log.debug("mark not reset at shutdown", exc_info=True)
