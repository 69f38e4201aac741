"""The jobs API: validation, isolation, listing, idempotency, quotas and the outbox."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pytest

from tests.helpers import User, api_error, wait_for

# Parked jobs go to the deploy fleet, which no worker consumes in these tests, so they stay
# queued; many small steps keep a cancel prompt should one ever start.
PARKED = {"seconds": 60, "steps": 120, "fleet": "deploy"}


def test_submit_answers_202_with_location_without_waiting(client) -> None:
    user = User(client)
    response = user.post(
        "/api/v1/jobs",
        json={"processor": "debug.sleep", "params": {"seconds": 60, "fleet": "deploy"}},
    )
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"] == f"/api/v1/jobs/{body['id']}"
    assert body["status"] == "queued" and body["max_attempts"] == 3
    assert body["params"] == {"seconds": 60, "steps": 1, "fleet": "deploy"}
    assert body["kind"] == "diagnostic" and body["queue"] == "deploy"
    # No worker consumes in this test: the job is still queued, cancel it to tidy up.
    assert user.post(f"/api/v1/jobs/{body['id']}/cancel").status_code == 200


@pytest.mark.parametrize(
    ("payload", "status", "code", "field"),
    [
        ({"processor": "nope.nothing"}, 422, "unknown_processor", "processor"),
        ({"params": {}}, 422, "validation_error", "processor"),
        ({"processor": "debug.sleep", "params": {"seconds": 301}}, 422, "invalid_params", "params"),
        (
            {"processor": "debug.sleep", "params": {"seconds": 1, "bogus": 1}},
            422,
            "invalid_params",
            "params",
        ),
        ({"processor": "debug.echo", "params": {}}, 422, "invalid_params", "params"),
        (
            {"processor": "debug.echo", "params": {"message": "x", "fleet": "gpu"}},
            422,
            "invalid_params",
            "params",
        ),
        (
            {"processor": "debug.echo", "params": {"message": "x"}, "max_attempts": 0},
            422,
            "validation_error",
            "max_attempts",
        ),
        (
            {"processor": "debug.echo", "params": {"message": "x"}, "max_attempts": 11},
            422,
            "validation_error",
            "max_attempts",
        ),
        ({"processor": "debug.echo", "params": "x"}, 422, "validation_error", "params"),
    ],
)
def test_submit_validation(client, payload, status, code, field) -> None:
    user = User(client)
    response = user.post("/api/v1/jobs", json=payload)
    assert response.status_code == status
    body = api_error(response)
    assert body["code"] == code
    assert field in body["details"]["fields"]


def test_errors_from_flask_itself_use_the_error_shape(client, make_app) -> None:
    user = User(client)
    missing = client.get("/api/v1/nowhere")
    api_error(missing, 404, "not_found")
    wrong_method = user.delete("/api/v1/jobs")
    api_error(wrong_method, 405, "method_not_allowed")
    assert "GET" in wrong_method.headers["Allow"]
    small = make_app(max_content_length=2048).test_client()
    too_big = small.post("/api/v1/auth/register", data="x" * 5000, content_type="application/json")
    api_error(too_big, 413, "payload_too_large")


def test_other_users_job_is_404_exactly_like_a_missing_one(client) -> None:
    alice, bob = User(client), User(client)
    job = alice.submit("debug.sleep", PARKED)
    for path in ("", "/events"):
        theirs = bob.get(f"/api/v1/jobs/{job['id']}{path}")
        missing = bob.get(f"/api/v1/jobs/{uuid.uuid4()}{path}")
        assert theirs.status_code == missing.status_code == 404
        assert api_error(theirs)["message"] == api_error(missing)["message"]
    for action in ("cancel", "retry"):
        assert bob.post(f"/api/v1/jobs/{job['id']}/{action}").status_code == 404
    assert bob.get("/api/v1/jobs/not-a-uuid").status_code == 404
    listed = bob.get("/api/v1/jobs").get_json()["items"]
    assert job["id"] not in [j["id"] for j in listed]
    admin = User(client, role="admin")
    assert admin.get(f"/api/v1/jobs/{job['id']}").status_code == 200
    assert alice.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200


def test_list_filters_and_cursor_pagination(client) -> None:
    user = User(client)
    ids = [user.submit("debug.sleep", PARKED)["id"] for _ in range(5)]
    for job_id in ids[:2]:
        user.post(f"/api/v1/jobs/{job_id}/cancel")
    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = user.get(f"/api/v1/jobs{query}").get_json()
        assert len(body["items"]) <= 2
        seen += [j["id"] for j in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each exactly once
    cancelled = user.get("/api/v1/jobs?status=cancelled").get_json()["items"]
    assert sorted(j["id"] for j in cancelled) == sorted(ids[:2])
    assert user.get("/api/v1/jobs?processor=debug.echo").get_json()["items"] == []
    assert len(user.get("/api/v1/jobs?kind=diagnostic").get_json()["items"]) == 5
    bad = user.get("/api/v1/jobs?status=sleeping")
    assert "status" in api_error(bad, 422)["details"]["fields"]
    assert user.get("/api/v1/jobs?cursor=garbage").status_code == 422
    assert user.get("/api/v1/jobs?limit=1000").status_code == 422
    for job_id in ids[2:]:
        user.post(f"/api/v1/jobs/{job_id}/cancel")


def test_admin_lists_everyones_jobs(client) -> None:
    alice = User(client)
    job = alice.submit("debug.sleep", PARKED)
    admin = User(client, role="admin")
    everyone = admin.get("/api/v1/jobs?limit=200").get_json()["items"]
    assert job["id"] in [j["id"] for j in everyone]
    alice.post(f"/api/v1/jobs/{job['id']}/cancel")


@pytest.mark.usefixtures("job_worker")
def test_idempotency_key_returns_the_original_job(client) -> None:
    user = User(client)
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = user.post(
        "/api/v1/jobs", json={"processor": "debug.echo", "params": {"message": "once"}}, headers=key
    )
    second = user.post(
        "/api/v1/jobs", json={"processor": "debug.echo", "params": {"message": "once"}}, headers=key
    )
    assert first.status_code == 202 and second.status_code == 200
    assert first.get_json()["id"] == second.get_json()["id"]
    other_user = User(client).post(
        "/api/v1/jobs", json={"processor": "debug.echo", "params": {"message": "once"}}, headers=key
    )
    assert other_user.status_code == 202 and other_user.get_json()["id"] != first.get_json()["id"]
    different = user.post(
        "/api/v1/jobs",
        json={"processor": "debug.echo", "params": {"message": "twice"}},
        headers=key,
    )
    api_error(different, 409, "idempotency_key_reused")
    jobs = user.get("/api/v1/jobs").get_json()["items"]
    assert len(jobs) == 1


def test_idempotency_key_expires_after_24_hours(client) -> None:
    from sqlalchemy import update

    from shared.db import session_scope
    from shared.models import Job

    user = User(client)
    key = {"Idempotency-Key": "daily-report"}
    first = user.submit("debug.sleep", PARKED, headers=key)
    user.post(f"/api/v1/jobs/{first['id']}/cancel")
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == uuid.UUID(first["id"]))
            .values(created_at=Job.created_at - timedelta(hours=25))
        )
    second = user.submit("debug.sleep", PARKED, headers=key)
    assert second["id"] != first["id"]
    user.post(f"/api/v1/jobs/{second['id']}/cancel")


def test_submit_rate_quota_per_user_with_retry_after(make_app) -> None:
    client = make_app(quota_submits_per_minute=3).test_client()
    alice, bob = User(client), User(client)
    accepted = [alice.submit("debug.sleep", PARKED) for _ in range(3)]
    refused = alice.post("/api/v1/jobs", json={"processor": "debug.sleep", "params": PARKED})
    assert refused.status_code == 429
    api_error(refused, code="rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    bob_job = bob.submit("debug.sleep", PARKED)  # independent of alice's quota
    for job in [*accepted, bob_job]:
        (alice if job in accepted else bob).post(f"/api/v1/jobs/{job['id']}/cancel")


def test_active_jobs_quota(make_app) -> None:
    client = make_app(quota_active_jobs=2).test_client()
    alice, bob = User(client), User(client)
    jobs = [alice.submit("debug.sleep", PARKED) for _ in range(2)]
    refused = alice.post("/api/v1/jobs", json={"processor": "debug.sleep", "params": PARKED})
    api_error(refused, 429, "too_many_active_jobs")
    bob.submit("debug.sleep", PARKED)
    alice.post(f"/api/v1/jobs/{jobs[0]['id']}/cancel")  # a finished job frees a slot
    third = alice.submit("debug.sleep", PARKED)
    for job in (jobs[1], third):
        alice.post(f"/api/v1/jobs/{job['id']}/cancel")


@pytest.mark.usefixtures("job_worker")
def test_unpublished_job_is_published_by_the_sweep(make_app, settings) -> None:
    from workers.sweeps import publish_unpublished

    offline = make_app(broker_url="redis://127.0.0.1:1/0").test_client()
    user = User(offline)
    job = user.submit("debug.echo", {"message": "survived an outage"})  # 202 though broker down
    assert user.job(job["id"])["status"] == "queued"
    wait_for(
        lambda: publish_unpublished(settings) == 1,
        timeout=10,
        message="the sweep to publish the job",
    )
    done = user.wait_status(job["id"], "succeeded")
    assert done["result"] == {"message": "survived an outage"}
    assert publish_unpublished(settings) == 0


@pytest.mark.usefixtures("job_worker")
def test_message_for_a_missing_job_is_dropped(settings, caplog) -> None:  # noqa: ANN001
    from shared.celery_app import app as celery_app
    from shared.dispatch.publish import Dispatch, send

    dispatch = Dispatch(uuid.uuid4(), uuid.uuid4(), "diagnostics", "dockyard.diagnostic.run")

    def dropped() -> bool:
        return any(
            getattr(record, "event", None) == "delivery_dropped"
            and getattr(record, "dispatch_id", None) == str(dispatch.dispatch_id)
            for record in caplog.records
        )

    with caplog.at_level(logging.INFO, logger="workers.runner"):
        send(dispatch)
        wait_for(dropped, message="the delivery to be dropped")
    # Job tasks keep no Celery result row: the job row is the result store.
    assert celery_app.AsyncResult(str(dispatch.dispatch_id)).state == "PENDING"


def test_redis_down_gives_a_clear_503(make_app, client) -> None:
    user = User(client)
    broken = make_app(redis_url="redis://127.0.0.1:1/0").test_client()
    response = broken.post(
        "/api/v1/jobs",
        json={"processor": "debug.echo", "params": {"message": "x"}},
        headers=user.headers,
    )
    assert response.status_code == 503
    api_error(response, code="service_unavailable")
    ready = broken.get("/readyz")
    assert ready.status_code == 503
    assert api_error(ready)["details"]["failing"] == ["redis"]


def test_postgres_down_gives_a_clear_503(make_app, client) -> None:
    user = User(client)
    broken = make_app(
        database_url="postgresql+psycopg2://dockyard:dockyard@127.0.0.1:1/nowhere"
    ).test_client()
    response = broken.get("/api/v1/jobs", headers=user.headers)
    assert response.status_code == 503
    assert api_error(response)["details"] == {"component": "postgres"}
    ready = broken.get("/readyz")
    assert ready.status_code == 503
    assert api_error(ready)["details"]["failing"] == ["postgres"]


def test_request_id_and_security_headers(client) -> None:
    echoed = client.get("/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert echoed.headers["X-Request-ID"] == "trace-abc.123"
    unsafe = "bad id <script>" + "x" * 200
    generated = client.get("/healthz", headers={"X-Request-ID": unsafe})
    assert generated.headers["X-Request-ID"] != unsafe
    assert len(generated.headers["X-Request-ID"]) == 32
    for response in (echoed, client.get("/api/v1/nope")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_health_and_readiness(client) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/api/v1/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"redis": "ok", "postgres": "ok"}


def test_processor_catalogue(client) -> None:
    user = User(client)
    items = {p["name"]: p for p in user.get("/api/v1/processors").get_json()["items"]}
    assert {"debug.sleep", "debug.echo", "debug.fail"} <= set(items)
    sleep = items["debug.sleep"]
    assert sleep["input"] == "none" and sleep["kind"] == "diagnostic"
    assert sleep["params"]["properties"]["seconds"]["maximum"] == 300
    assert "seconds" in sleep["params"]["required"]
    assert client.get("/api/v1/processors").status_code == 401
