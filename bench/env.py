"""The bench's own database and Redis databases, and the environment every process gets."""

from __future__ import annotations

import os

import psycopg2
from redis import Redis

DB_NAME = "dockyard_bench"
PG = {"host": "127.0.0.1", "port": 5432, "user": "dockyard", "password": "dockyard"}
DATABASE_URL = f"postgresql+psycopg2://dockyard:dockyard@127.0.0.1:5432/{DB_NAME}"
BROKER_URL = "redis://127.0.0.1:6379/12"
REDIS_URL = "redis://127.0.0.1:6379/13"

BENCH_ENV = {
    "DOCKYARD_ENV": "test",
    "DATABASE_URL": DATABASE_URL,
    "CELERY_BROKER_URL": BROKER_URL,
    "REDIS_URL": REDIS_URL,
    "QUOTA_SUBMITS_PER_MINUTE": "0",
    "QUOTA_ACTIVE_JOBS": "0",
    "LOG_LEVEL": "WARNING",
}


def apply() -> None:
    """Point this process (and its children) at the bench's services."""
    os.environ.update(BENCH_ENV)
    os.environ.pop("CELERY_RESULT_BACKEND", None)


def fresh_database() -> None:
    """Drop and recreate the bench database, then migrate it: every run starts equal."""
    connection = psycopg2.connect(dbname="postgres", **PG)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (DB_NAME,),
        )
        cursor.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
        cursor.execute(f"CREATE DATABASE {DB_NAME}")
    connection.close()
    from shared.migrate import upgrade

    upgrade(DATABASE_URL)
    flush_redis()


def flush_redis() -> None:
    for url in (BROKER_URL, REDIS_URL):
        Redis.from_url(url).flushdb()


def query_one(sql: str) -> object:
    connection = psycopg2.connect(dbname=DB_NAME, **PG)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            if cursor.description is None:
                return None
            row = cursor.fetchone()
            return row[0] if row else None
    finally:
        connection.close()
