"""The proxy's routes, from the database: every app, routed to its current release when that
one is live, else answered 503 (stopped); unknown hosts 404 (workers/deploy/proxy.py).

PostgreSQL is the truth and Caddy a cache of it: `sync` reads every app and its current
release, and loads the whole config into Caddy when it differs. It runs after each switch or
stop, and every PROXY_SYNC_INTERVAL in each deploy worker (a thread started with the worker),
so a restarted proxy (routes gone) answers for every app again within about that long, with
no redeploy. The read and the load happen under one advisory lock: two workers syncing at
once load one after the other, each what was committed when it took the lock, so an older
view never overwrites a newer switch.

Each run reads all apps in one query (name, port and status: a few bytes each); at 10,000
apps that is one index-free scan of a small table every couple of seconds per worker. Past
that, sync only on change (LISTEN/NOTIFY) and read the full set less often.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from sqlalchemy import select

from shared import locks
from shared.config import Settings, get_settings
from shared.db import session_scope
from shared.deploy.status import LIVE
from shared.dispatch import queues
from shared.models import App, Deployment
from workers.deploy import proxy

log = logging.getLogger(__name__)
#: The advisory lock every sync takes (a fixed name: one proxy configuration).
SYNC_LOCK = uuid.UUID("0b5e7a1c-9d1e-4c3e-8f7a-70a1e5c0ffee")
_stop = threading.Event()


def upstream_host(settings: Settings) -> str:
    return (
        settings.proxy_upstream_host
        or settings.deploy_health_host
        or (settings.deploy_bind_address)
    )


def desired_routes(session: Any, settings: Settings) -> list[proxy.Route]:
    """Every app: its current release's host port when that release is live, else None."""
    rows = session.execute(
        select(App.name, Deployment.host_port, Deployment.status).outerjoin(
            Deployment, Deployment.id == App.current_deployment_id
        )
    ).all()
    host = upstream_host(settings)
    return [
        proxy.Route(name, f"{host}:{port}" if port and status in LIVE else None)
        for name, port, status in rows
    ]


def sync(settings: Settings | None = None) -> bool:
    """Bring the proxy in line with the database; True when it loaded a new config.
    Raises proxy.ProxyUnavailable when the proxy cannot be reached."""
    settings = settings or get_settings()
    with session_scope() as session:
        locks.lock(session, SYNC_LOCK)
        return proxy.apply(desired_routes(session, settings), settings)


def sync_quietly(settings: Settings | None = None) -> None:
    """`sync` for the deploy steps: a proxy that is down is brought in line by the periodic
    sync once it is back; the deploy itself does not fail for it."""
    try:
        sync(settings)
    except proxy.ProxyUnavailable as error:
        log.warning("proxy routes not synced: %s", error, extra={"event": "proxy_unsynced"})
    except Exception:
        log.warning("proxy routes not synced", exc_info=True, extra={"event": "proxy_unsynced"})


def _keep_synced() -> None:
    settings = get_settings()
    while not _stop.wait(settings.proxy_sync_interval):
        try:
            if sync(settings):
                log.info("proxy routes restored", extra={"event": "proxy_synced"})
        except proxy.ProxyUnavailable as error:
            log.warning("proxy unavailable: %s", error, extra={"event": "proxy_unavailable"})
        except Exception:
            log.warning("proxy sync failed", exc_info=True, extra={"event": "proxy_sync_failed"})


def _serves_deploy(sender: Any) -> bool:
    try:
        return queues.DEPLOY in set(sender.app.amqp.queues.consume_from)
    except AttributeError:
        return False


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    if _serves_deploy(sender):
        _stop.clear()
        threading.Thread(target=_keep_synced, name="proxy-sync", daemon=True).start()


@worker_shutdown.connect
def _halt(**_: Any) -> None:
    _stop.set()
