"""POST /jobs/batch: all or nothing, in order, one transaction, one Idempotency-Key for the
batch, quotas counted per job."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import Job, JobBatch, JobEvent
from tests.helpers import User, api_error

BATCH = "/api/v1/jobs/batch"
# Parked jobs go to the deploy fleet, which no worker consumes in these tests: they stay
# queued (active) for as long as a test needs.
PARKED = {"seconds": 60, "fleet": "deploy"}


def echo(message: str, **extra: Any) -> dict[str, Any]:
    return {"processor": "debug.echo", "params": {"message": message}, **extra}


def parked(**extra: Any) -> dict[str, Any]:
    return {"processor": "debug.sleep", "params": PARKED, **extra}


def owned(user: User) -> tuple[int, int]:
    """(jobs, batches) the user owns in the database."""
    owner = uuid.UUID(user.profile["id"])
    with session_scope() as session:
        jobs = session.scalar(select(func.count()).select_from(Job).where(Job.owner_id == owner))
        batches = session.scalar(
            select(func.count()).select_from(JobBatch).where(JobBatch.owner_id == owner)
        )
    return jobs or 0, batches or 0


def cancel_all(user: User, items: list[dict[str, Any]]) -> None:
    for job in items:
        if job["status"] in ("queued", "scheduled"):
            user.post(f"/api/v1/jobs/{job['id']}/cancel")


@pytest.mark.usefixtures("job_worker")
def test_a_batch_is_created_in_order_in_one_transaction_and_runs(client) -> None:
    user = User(client)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    jobs = [
        echo("first", labels={"team": "data"}),
        echo("second", priority="high", max_attempts=2),
        echo("later", run_at=later),
        echo("fourth", priority="low"),
    ]
    response = user.post(BATCH, json={"jobs": jobs})
    assert response.status_code == 202, response.get_json()
    items = response.get_json()["items"]
    assert [job["params"]["message"] for job in items] == ["first", "second", "later", "fourth"]
    assert [job["status"] for job in items] == ["queued", "queued", "scheduled", "queued"]
    assert items[0]["labels"] == {"team": "data"}
    assert items[1]["priority"] == "high" and items[1]["max_attempts"] == 2
    assert items[2]["run_at"] is not None
    assert len({job["id"] for job in items}) == 4

    ids = [uuid.UUID(job["id"]) for job in items]
    with session_scope() as session:
        rows = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(ids)))}
        batch = session.get(JobBatch, rows[ids[0]].batch_id)
        assert batch is not None and batch.size == 4 and batch.idempotency_key is None
        assert {job.batch_id for job in rows.values()} == {batch.id}
        # One transaction: one now() for every row; events in submission order.
        assert len({job.created_at for job in rows.values()}) == 1
        submitted = session.scalars(
            select(JobEvent.job_id)
            .where(JobEvent.job_id.in_(ids), JobEvent.type == "submitted")
            .order_by(JobEvent.id)
        ).all()
        assert submitted == ids

    for job in (items[0], items[1], items[3]):
        done = user.wait_status(job["id"], "succeeded")
        assert done["result"] == {"message": job["params"]["message"]}
    assert user.job(items[2]["id"])["status"] == "scheduled"
    cancel_all(user, [items[2]])


def test_a_failure_in_the_middle_of_a_batch_leaves_nothing(client, monkeypatch, settings) -> None:
    """The insert has run when the publish fails: the rollback takes every row with it."""
    from shared.jobs import submission

    def broken(*_: Any, **__: Any) -> bool:
        raise RuntimeError("injected failure after the insert")

    monkeypatch.setattr(submission, "publish_new_jobs", broken)
    user = User(client)
    broker = Redis.from_url(settings.broker_url)
    depth = broker.llen("deploy")
    response = user.post(BATCH, json={"jobs": [parked(), parked(), parked()]})
    assert response.status_code == 500
    assert owned(user) == (0, 0)
    assert broker.llen("deploy") == depth


def test_invalid_jobs_are_all_reported_by_index_and_nothing_is_created(client) -> None:
    user = User(client)
    jobs = [
        echo("fine"),
        {"processor": "no.such.processor", "params": {}},
        {"processor": "debug.sleep", "params": {"seconds": "long"}},
        {"processor": "file.checksum", "params": {}},
        echo("bad priority", priority="urgent"),
        echo("both", delay_seconds=5, run_at=datetime.now(UTC).isoformat()),
        "not an object",
        echo("fine too"),
    ]
    response = user.post(BATCH, json={"jobs": jobs})
    assert response.status_code == 422
    body = api_error(response)
    assert body["code"] == "invalid_batch"
    errors = body["details"]["errors"]
    assert [(e["index"], e["code"]) for e in errors] == [
        (1, "unknown_processor"),
        (2, "invalid_params"),
        (3, "wrong_endpoint"),
        (4, "validation_error"),
        (5, "invalid_params"),
        (6, "validation_error"),
    ]
    assert all(e["message"] for e in errors)
    assert "priority" in errors[3]["fields"]
    assert owned(user) == (0, 0)


def test_the_batch_size_is_bounded(make_app) -> None:
    user = User(make_app(batch_max_jobs=3).test_client())
    response = user.post(BATCH, json={"jobs": [parked()] * 4})
    assert response.status_code == 422
    api_error(response, code="batch_too_large")
    assert api_error(response)["details"] == {"limit": 3, "size": 4}
    for body in ({"jobs": []}, {"jobs": "many"}, {}):
        response = user.post(BATCH, json=body)
        api_error(response, 422, "validation_error")
    assert owned(user) == (0, 0)
    response = user.post(BATCH, json={"jobs": [parked()] * 3})
    assert response.status_code == 202
    cancel_all(user, response.get_json()["items"])


def test_the_idempotency_key_covers_the_whole_batch(client) -> None:
    user = User(client)
    key = {"Idempotency-Key": f"batch-{uuid.uuid4()}"}
    jobs = [parked(labels={"n": str(index)}) for index in range(5)]
    first = user.post(BATCH, json={"jobs": jobs}, headers=key)
    assert first.status_code == 202
    # The same request, its keys in another order: the same jobs, in the same order.
    reordered = json.dumps({"jobs": [dict(reversed(job.items())) for job in jobs]})
    replay = user.post(BATCH, data=reordered, content_type="application/json", headers=key)
    assert replay.status_code == 200
    assert [job["id"] for job in replay.get_json()["items"]] == [
        job["id"] for job in first.get_json()["items"]
    ]
    different = user.post(BATCH, json={"jobs": jobs[:4]}, headers=key)
    assert different.status_code == 409
    api_error(different, code="idempotency_key_reused")
    assert owned(user) == (5, 1)
    # Another user's key is their own.
    other = User(user.client)
    assert other.post(BATCH, json={"jobs": jobs[:1]}, headers=key).status_code == 202
    cancel_all(user, first.get_json()["items"])


def test_a_batch_past_the_active_jobs_quota_is_refused_whole(make_app) -> None:
    user = User(make_app(quota_active_jobs=3).test_client())
    refused = user.post(BATCH, json={"jobs": [parked()] * 4})
    assert refused.status_code == 429
    api_error(refused, code="too_many_active_jobs")
    assert owned(user) == (0, 0)
    accepted = user.post(BATCH, json={"jobs": [parked()] * 3})
    assert accepted.status_code == 202
    assert user.post(BATCH, json={"jobs": [parked()]}).status_code == 429
    assert owned(user) == (3, 1)
    cancel_all(user, accepted.get_json()["items"])


def test_the_rate_limit_counts_every_job_of_a_batch(make_app) -> None:
    user = User(make_app(quota_submits_per_minute=5).test_client())
    assert user.post(BATCH, json={"jobs": [parked()] * 6}).status_code == 429
    assert owned(user) == (0, 0)


def test_a_refused_broker_leaves_the_whole_batch_for_the_outbox(make_app) -> None:
    user = User(make_app(broker_url="redis://127.0.0.1:1/0").test_client())
    response = user.post(BATCH, json={"jobs": [parked(), parked()]})
    assert response.status_code == 202
    ids = [uuid.UUID(job["id"]) for job in response.get_json()["items"]]
    with session_scope() as session:
        published = session.scalars(select(Job.published_at).where(Job.id.in_(ids))).all()
    assert published == [None, None]
    cancel_all(user, response.get_json()["items"])
