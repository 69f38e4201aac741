"""Engine and session factory; one engine per process, created lazily.

Celery's prefork pool forks after import, so the engine is built on first use in each
process rather than at import time (sharing a psycopg2 connection across a fork corrupts it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from shared.config import get_settings

_engines: dict[tuple[str, int], tuple[Engine, sessionmaker[Session]]] = {}
_connect_args: dict[str, str] = {}


def _entry(url: str | None) -> tuple[Engine, sessionmaker[Session]]:
    url = url or get_settings().database_url
    key = (url, os.getpid())  # a forked process builds its own pool
    if key not in _engines:
        engine = create_engine(
            url,
            # No pre-ping: it would add a round trip to every transaction. A connection
            # that died is invalidated on first use; the worker task retries that delivery
            # and the API answers 503 for that one request.
            pool_pre_ping=False,
            pool_size=10,
            max_overflow=20,
            connect_args=_connect_args,
            # Bound values never appear in exception messages or logs: they can be password
            # hashes, deploy `env` secrets or whatever a user sent.
            hide_parameters=True,
        )
        _engines[key] = (engine, sessionmaker(bind=engine, expire_on_commit=False))
    return _engines[key]


def get_engine(url: str | None = None) -> Engine:
    """The engine for `url` (default: DATABASE_URL), one per URL and process."""
    return _entry(url)[0]


def new_session(url: str | None = None) -> Session:
    return _entry(url)[1]()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception."""
    session = new_session(url)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def reset_engine() -> None:
    """Drop cached engines (a forked worker process, or tests switching databases)."""
    for key, (engine, _factory) in list(_engines.items()):
        if key[1] == os.getpid():
            engine.dispose()
        else:
            engine.dispose(close=False)  # the parent's sockets: leave them to the parent
    _engines.clear()


def use_asynchronous_commit() -> None:
    """Workers' transactions stop waiting for the WAL flush (synchronous_commit=off).

    Safe here because everything a worker writes is re-derivable: a PostgreSQL crash can
    lose its last fraction of a second of commits, which at worst leaves a job `running`
    with a stale heartbeat, and the sweep runs it again (at-least-once). The API keeps
    synchronous commits: its 202 is a promise that the job is stored.
    """
    _connect_args["options"] = "-c synchronous_commit=off"
    reset_engine()
