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
_factory: sessionmaker[Session] | None = None
_pid: int | None = None


def get_engine() -> Engine:
    global _engine, _factory, _pid
    if _engine is None or _pid != os.getpid():
        if _engine is not None:
            _engine.dispose(close=False)
        _engine = create_engine(
            get_settings().database_url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            future=True,
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
