"""The bench's own stores: one PostgreSQL database and two Redis databases nobody else uses.

Every process the bench starts inherits BENCH_ENV, so the platform, raw Celery and the minimal
app all talk to the same freshly emptied stores, and a bench run never touches development or
test data (nor does a test run that happens to share the machine touch the bench's).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "var" / "bench"

DB_NAME = "dockyard_bench"
PG: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 5432,
    "user": "dockyard",
    "password": "dockyard",
}
DATABASE_URL = f"postgresql+psycopg2://dockyard:dockyard@127.0.0.1:5432/{DB_NAME}"
RESULT_BACKEND = "db+" + DATABASE_URL
BROKER_URL = "redis://127.0.0.1:6379/12"
REDIS_URL = "redis://127.0.0.1:6379/13"

BENCH_ENV = {
    "DOCKYARD_ENV": "test",
    "DATABASE_URL": DATABASE_URL,
    "CELERY_BROKER_URL": BROKER_URL,
    "REDIS_URL": REDIS_URL,
    # Quotas off: the bench submits far more than any user may, on purpose.
    "QUOTA_SUBMITS_PER_MINUTE": "0",
    "QUOTA_ACTIVE_JOBS": "0",
    # One user watches with 50 streams; every bench client logs in from 127.0.0.1.
    "MAX_STREAMS_PER_USER": "0",
    "AUTH_RATE_PER_MINUTE": "0",
    "LOG_LEVEL": "WARNING",
    "STORAGE_BACKEND": "local",
    "STORAGE_LOCAL_ROOT": str(LOG_DIR / "storage"),
    # Children import bench.* from the repository (it is not an installed package).
    "PYTHONPATH": str(ROOT),
}
# Settings a developer's shell may carry that would point children elsewhere.
_UNSET = ("CELERY_RESULT_BACKEND", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL")


def apply() -> None:
    """Point this process, and so every child it starts, at the bench's stores.

    The bench process itself uses Celery clients (raw tasks, control pings), and Celery lets
    $CELERY_BROKER_URL override an app's own broker, so the variables must agree here too.
    """
    os.environ.update(BENCH_ENV)
    for name in _UNSET:
        os.environ.pop(name, None)


def recreate_database() -> None:
    """Drop and recreate the bench database: every run starts from the same empty tables."""
    connection = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (DB_NAME,),
            )
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(DB_NAME)))
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))
    finally:
        connection.close()


def migrate() -> None:
    """Apply the platform's migrations in a child process.

    A child keeps the platform's settings cache and Alembic's logging set-up out of the bench
    process, and its output goes to a log file instead of the bench's report.
    """
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / "migrate.log"
    with log_path.open("wb") as log:
        result = subprocess.run(
            [sys.executable, "-m", "shared.migrate", "upgrade"],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"migrations failed (exit {result.returncode}); see {log_path}")


def flush_redis() -> None:
    """Empty the broker and application Redis databases (queues, quota and revocation keys)."""
    for url in (BROKER_URL, REDIS_URL):
        client = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            client.flushdb()
        finally:
            client.close()


class Database:
    """One long-lived autocommit connection for the bench's own queries.

    Polling opens no connection per query: PostgreSQL forks a backend for every new
    connection, which on a small machine would steal CPU from the system being measured.
    """

    def __init__(self) -> None:
        self._connection = psycopg2.connect(dbname=DB_NAME, connect_timeout=5, **PG)
        self._connection.autocommit = True

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        with self._connection.cursor() as cursor:
            cursor.execute(statement, params)

    def scalar(self, statement: str, params: tuple[Any, ...] = ()) -> Any:
        with self._connection.cursor() as cursor:
            cursor.execute(statement, params)
            row = cursor.fetchone()
            return row[0] if row else None

    def rows(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._connection.cursor() as cursor:
            cursor.execute(statement, params)
            return list(cursor.fetchall())

    def close(self) -> None:
        self._connection.close()
