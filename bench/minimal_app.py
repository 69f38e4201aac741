"""The ceiling of any submit endpoint here: one INSERT and one Redis LPUSH, nothing else."""

from __future__ import annotations

import json
import uuid

from flask import Flask, jsonify, request
from redis import Redis
from sqlalchemy import create_engine, text

from bench.env import DATABASE_URL, REDIS_URL

app = Flask(__name__)
engine = create_engine(DATABASE_URL, pool_size=10, max_overflow=20, pool_pre_ping=True)
redis = Redis.from_url(REDIS_URL)


@app.get("/healthz")
def healthz():  # noqa: ANN201
    return jsonify({"status": "ok"})


@app.post("/submit")
def submit():  # noqa: ANN201
    payload = request.get_json(force=True)
    row_id = uuid.uuid4()
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO bench_minimal (id, payload) VALUES (:id, CAST(:payload AS jsonb))"),
            {"id": row_id, "payload": json.dumps(payload)},
        )
    redis.lpush("bench:minimal", str(row_id))
    return jsonify({"id": str(row_id)}), 202


def create_table() -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE IF NOT EXISTS bench_minimal (id uuid PRIMARY KEY, payload jsonb,"
                " created_at timestamptz DEFAULT now())"
            )
        )
