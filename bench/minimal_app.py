"""The least a submit endpoint can do here: one INSERT, one Redis LPUSH, a 202 with JSON.

It is the baseline for `POST /api/v1/jobs`: same gunicorn settings, same database and
Redis, same SQLAlchemy/psycopg2 pool settings as the platform (shared/db.py), and nothing else,
so the ratio shows what the platform's own work (auth, validation, job row and event, message)
costs on top of the unavoidable write and enqueue.
"""

from __future__ import annotations

import json
import uuid

from flask import Flask, Response, jsonify, request
from redis import Redis
from sqlalchemy import create_engine, text

from bench.env import DATABASE_URL, REDIS_URL

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS bench_minimal (
    id uuid PRIMARY KEY,
    payload jsonb,
    created_at timestamptz DEFAULT now()
)
"""
QUEUE_KEY = "bench:minimal"
_INSERT = text("INSERT INTO bench_minimal (id, payload) VALUES (:id, CAST(:payload AS jsonb))")

app = Flask(__name__)
# Without --preload each gunicorn worker imports this module after the fork, so each worker
# builds its own pool. No pre-ping, as in the platform: it would add a query per request.
engine = create_engine(
    DATABASE_URL,
    pool_size=10,
    max_overflow=20,
    pool_pre_ping=False,
    hide_parameters=True,
)
redis = Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=2)


@app.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@app.post("/submit")
def submit() -> tuple[Response, int]:
    payload = request.get_json()
    row_id = uuid.uuid4()
    with engine.begin() as connection:
        connection.execute(_INSERT, {"id": row_id, "payload": json.dumps(payload)})
    redis.lpush(QUEUE_KEY, str(row_id))
    return jsonify({"id": str(row_id), "status": "queued"}), 202
