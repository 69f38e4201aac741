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

_engine: Engine | None = None
_connect_args: dict[str, str] = {}
_factory: sessionmaker[Session] | None = None
_pid: int | None = None


def get_engine() -> Engine:
    global _engine, _factory, _pid
    if _engine is None or _pid != os.getpid():
        if _engine is not None:
            _engine.dispose(close=False)
        _engine = create_engine(
            get_settings().database_url,
            # No pre-ping: it would add a round trip to every transaction. A connection
            # that died is invalidated on first use; the worker task retries that delivery.
            pool_pre_ping=False,
            pool_size=10,
            max_overflow=20,
            connect_args=_connect_args,
        )
        _factory = sessionmaker(bind=_engine, expire_on_commit=False)
        _pid = os.getpid()
    return _engine


def new_session() -> Session:
    get_engine()
    assert _factory is not None
    return _factory()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def reset_engine() -> None:
    """Drop the cached engine (tests switch databases)."""
    global _engine, _factory, _pid
    if _engine is not None:
        _engine.dispose()
    _engine = _factory = _pid = None


def use_asynchronous_commit() -> None:
    """Workers' transactions stop waiting for the WAL flush (synchronous_commit=off).

    Safe here because everything a worker writes is re-derivable: a PostgreSQL crash can
    lose its last fraction of a second of commits, which at worst leaves a job `running`
    with a stale heartbeat, and the sweep runs it again (at-least-once). The API keeps
    synchronous commits: its 202 is a promise that the job is stored.
    """
    _connect_args["options"] = "-c synchronous_commit=off"
    reset_engine()
