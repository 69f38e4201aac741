"""The one place Redis clients are made: one client per role, URL and process.

The platform talks to Redis in a few roles that want different timeouts: the broker side
(job messages and their marks: a publish may wait a little, since the job row depends on it),
the API's own state (token blocklist, quotas, stream slots: fail fast and answer 503), counters
and live events (best effort on every job: never hold up the work), and a metrics scrape.
Clients are cached per process id, because a forked worker must never share its parent's
sockets.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from redis import Redis

#: Role -> keyword arguments of its client.
_ROLES: dict[str, dict[str, Any]] = {
    "broker": {"socket_connect_timeout": 2, "socket_timeout": 5},
    "api": {"socket_connect_timeout": 2, "socket_timeout": 2, "health_check_interval": 30},
    "events": {"socket_connect_timeout": 1, "socket_timeout": 1},
    "scrape": {"socket_connect_timeout": 2, "socket_timeout": 2},
}


@lru_cache(maxsize=32)
def _client(role: str, url: str, pid: int) -> Redis:
    return Redis.from_url(url, **_ROLES[role])


def broker(url: str) -> Redis:
    """The broker's database: job messages (shared.dispatch.fast_publish) and their marks."""
    return _client("broker", url, os.getpid())


def api_state(url: str) -> Redis:
    """REDIS_URL for the API's request path: blocklist, quotas, stream slots, readiness."""
    return _client("api", url, os.getpid())


def events(url: str) -> Redis:
    """REDIS_URL for counters, live events and sweep cursors: best effort, short timeouts."""
    return _client("events", url, os.getpid())


def scrape(url: str) -> Redis:
    """A `/metrics` scrape reading counters and queue depths."""
    return _client("scrape", url, os.getpid())
