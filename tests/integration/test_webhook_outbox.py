"""Webhook deliveries are recorded in the transaction of the state change that causes them
(shared/webhooks/outbox.py): one pending row per interested webhook, whichever path the job
took (the single-statement succeed or the general transitions), and the deliver message is
sent after the commit."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from shared.celery_app import app as celery_app
from shared.config import Settings
from shared.db import get_engine, session_scope
from shared.deploy import transitions as deploy_transitions
from shared.deploy.status import DeploymentStatus
from shared.dispatch import queues
from shared.errors import PermanentJobError, RetryableJobError
from shared.jobs import transitions
from shared.jobs.fast_transitions import try_succeed
from shared.models import Deployment, Job, Webhook, WebhookDelivery
from shared.redis import broker
from shared.webhooks import outbox as webhook_outbox
from shared.webhooks.payloads import render
from tests.helpers import User

TASK = "dockyard.diagnostics.run"


def _owner(app) -> uuid.UUID:
    return uuid.UUID(User(app.test_client()).profile["id"])


def _webhook(
    owner: uuid.UUID,
    events: list[str],
    labels: dict[str, str] | None = None,
    enabled: bool = True,
) -> uuid.UUID:
    webhook_id = uuid.uuid4()
    with session_scope() as session:
        session.add(
            Webhook(
                id=webhook_id,
                owner_id=owner,
                url="https://hooks.example.com/outbox",
                events=events,
                labels=labels or {},
                enabled=enabled,
                secret="not-a-real-token",
            )
        )
    return webhook_id


def _job(owner: uuid.UUID, status: str = "running", **state: Any) -> tuple[uuid.UUID, uuid.UUID]:
    job_id, dispatch_id = uuid.uuid4(), uuid.uuid4()
    with session_scope() as session:
        session.add(
            Job(
                id=job_id,
                owner_id=owner,
                status=status,
                dispatch_id=dispatch_id,
                **{
                    "kind": "diagnostic",
                    "processor": "debug.echo",
                    "queue": "diagnostics",
                    "params": {"message": "outbox"},
                    "attempts": int(status == "running"),
                    "max_attempts": 3,
                    **state,
                },
            )
        )
    return job_id, dispatch_id


def _deliveries(**where: Any) -> list[tuple[uuid.UUID, str, str]]:
    """(webhook, event, status) of the deliveries for a job or deployment."""
    column = (
        WebhookDelivery.job_id if "job_id" in where else WebhookDelivery.deployment_id
    ) == next(iter(where.values()))
    with session_scope() as session:
        rows = session.execute(
            select(
                WebhookDelivery.webhook_id, WebhookDelivery.event_type, WebhookDelivery.status
            ).where(column)
        ).all()
    return sorted(tuple(row) for row in rows)  # type: ignore[misc]


def _ended(job_id: uuid.UUID, move: Any) -> transitions.Effects:
    """Apply a general transition to the locked job and commit; its effects."""
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None
        effects = move(session, job)
    return effects if isinstance(effects, transitions.Effects) else effects[1]


def _sent_delivery_ids() -> set[str]:
    """The delivery ids of the deliver messages waiting in the webhooks queue."""
    client = broker(str(celery_app.conf.broker_write_url))
    ids = set()
    for raw in client.lrange(queues.WEBHOOKS, 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == queues.TASK_WEBHOOK_DELIVER:  # not a beat tick
            _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            ids.add(kwargs["delivery_id"])
    return ids


def test_a_fast_success_records_one_pending_delivery_and_sends_it(app) -> None:
    owner = _owner(app)
    wanted = _webhook(owner, ["job.succeeded"])
    _webhook(owner, ["job.failed"])
    job_id, dispatch_id = _job(owner)
    effects = try_succeed(job_id, dispatch_id, {"ok": True})
    assert effects is not None and effects.webhook_deliveries == []  # sent already
    assert _deliveries(job_id=job_id) == [(wanted, "job.succeeded", "pending")]
    with session_scope() as session:
        delivery = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
        ).one()
        assert delivery.next_attempt_at is not None and delivery.attempts == 0
        assert delivery.body is None and delivery.deployment_id is None
    assert str(delivery.id) in _sent_delivery_ids()


def test_a_general_success_records_it_in_the_same_transaction(app) -> None:
    owner = _owner(app)
    wanted = _webhook(owner, ["job.succeeded"])
    job_id, _ = _job(owner)
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None
        effects = transitions.succeed(session, job, {"ok": True})
        assert len(effects.webhook_deliveries) == 1
        assert _deliveries(job_id=job_id) == []  # another transaction sees nothing yet
    assert _deliveries(job_id=job_id) == [(wanted, "job.succeeded", "pending")]
    effects.send()
    assert str(effects.webhook_deliveries[0]) in _sent_delivery_ids()


def test_a_rolled_back_transition_records_nothing(app) -> None:
    owner = _owner(app)
    _webhook(owner, ["*"])
    job_id, _ = _job(owner)
    with pytest.raises(RuntimeError), session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None
        transitions.succeed(session, job, {})
        raise RuntimeError("the worker dies before the commit")
    assert _deliveries(job_id=job_id) == []


def test_failed_dead_and_cancelled_jobs_are_delivered(app, settings: Settings) -> None:
    owner = _owner(app)
    failed = _webhook(owner, ["job.failed"])
    dead = _webhook(owner, ["job.dead"])
    cancelled = _webhook(owner, ["job.cancelled"])
    every = _webhook(owner, ["*"])

    job_id, _ = _job(owner)
    _ended(
        job_id,
        lambda s, j: transitions.attempt_failed(
            s, j, PermanentJobError("bad_input", "no"), TASK, settings
        ),
    )
    assert _deliveries(job_id=job_id) == sorted(
        [(failed, "job.failed", "pending"), (every, "job.failed", "pending")]
    )

    job_id, _ = _job(owner, attempts=3, max_attempts=3)
    outcome = _ended(
        job_id,
        lambda s, j: transitions.attempt_failed(
            s, j, RetryableJobError("flaky", "again"), TASK, settings
        ),
    )
    assert outcome.ended == "dead"
    assert _deliveries(job_id=job_id) == sorted(
        [(dead, "job.dead", "pending"), (every, "job.dead", "pending")]
    )

    job_id, _ = _job(owner, attempts=1, max_attempts=3)  # a retry is not an end: nothing
    _ended(
        job_id,
        lambda s, j: transitions.attempt_failed(
            s, j, RetryableJobError("flaky", "again"), TASK, settings
        ),
    )
    assert _deliveries(job_id=job_id) == []

    job_id, _ = _job(owner)  # a cancel the worker finished
    _ended(job_id, transitions.finish_cancelled)
    job_id_queued, _ = _job(owner, status="queued")  # a cancel of a waiting job
    _ended(job_id_queued, transitions.cancel)
    for ended in (job_id, job_id_queued):
        assert _deliveries(job_id=ended) == sorted(
            [(cancelled, "job.cancelled", "pending"), (every, "job.cancelled", "pending")]
        )

    job_id, _ = _job(owner, cancel_requested=True, attempts=3, max_attempts=3)
    _ended(job_id, lambda s, j: transitions.worker_lost(s, j, TASK))  # cancelled
    assert _deliveries(job_id=job_id) == sorted(
        [(cancelled, "job.cancelled", "pending"), (every, "job.cancelled", "pending")]
    )


def test_label_filters_disabled_webhooks_and_other_users(app) -> None:
    owner, other = _owner(app), _owner(app)
    matching = _webhook(owner, ["job.succeeded"], labels={"team": "data"})
    _webhook(owner, ["job.succeeded"], labels={"team": "web"})
    _webhook(owner, ["job.succeeded"], labels={"team": "data", "env": "prod"})
    _webhook(owner, ["job.succeeded"], enabled=False)
    _webhook(other, ["*"])
    labels = {"team": "data", "env": "test"}

    fast_id, fast_dispatch = _job(owner, labels=labels)
    assert try_succeed(fast_id, fast_dispatch, {}) is not None
    general_id, _ = _job(owner, labels=labels)
    _ended(general_id, lambda s, j: transitions.succeed(s, j, {}))
    for job_id in (fast_id, general_id):
        assert _deliveries(job_id=job_id) == [(matching, "job.succeeded", "pending")]


def test_an_owner_without_webhooks_costs_the_fast_success_no_statement(app) -> None:
    """The deliveries are part of the succeed statement: still one round trip."""
    owner = _owner(app)
    job_id, dispatch_id = _job(owner)
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(args[2])

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert try_succeed(job_id, dispatch_id, {}) is not None
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(statements) == 1 and "webhook_deliveries" in statements[0]
    assert _deliveries(job_id=job_id) == []


def test_the_owner_probe_uses_the_partial_index(app) -> None:
    """Planned over many webhooks of another owner, the probe of an owner without any is an
    index scan (the rows are rolled back)."""
    owner = _owner(app)
    with session_scope() as session:
        session.execute(
            Webhook.__table__.insert(),
            [
                {
                    "id": uuid.uuid4(),
                    "owner_id": owner,
                    "url": "https://hooks.example.com/many",
                    "events": ["*"],
                    "labels": {},
                    "secret": "x",
                }
                for _ in range(20_000)
            ],
        )
        session.execute(text("ANALYZE webhooks"))
        plan = session.execute(
            text("EXPLAIN " + str(webhook_outbox._RECORD.text)),
            {
                "owner_id": uuid.uuid4(),
                "event": "job.succeeded",
                "labels": "{}",
                "job_id": None,
                "deployment_id": None,
            },
        ).all()
        session.rollback()
    assert "ix_webhooks_owner_enabled" in "\n".join(row[0] for row in plan)


def test_deployment_events_go_to_webhooks_without_a_label_filter(app) -> None:
    owner = _owner(app)
    every = _webhook(owner, ["*"])
    healthy = _webhook(owner, ["deployment.healthy"])
    _webhook(owner, ["*"], labels={"team": "data"})  # deployments carry no labels
    deployment_id = uuid.uuid4()
    with session_scope() as session:
        session.add(
            Deployment(
                id=deployment_id,
                owner_id=owner,
                job_id=uuid.uuid4(),
                repo_url="https://github.com/octo/hello",
                repo_key="github.com/octo/hello",
                status=DeploymentStatus.STARTING.value,
            )
        )
    moves: list[Callable[[Session, Deployment], deploy_transitions.Effects]] = [
        lambda session, row: deploy_transitions.mark_healthy(session, row, "http://hello"),
        # a check that found nothing new tells nobody
        lambda session, row: deploy_transitions.record_health(session, row, True, None),
        lambda session, row: deploy_transitions.record_health(session, row, False, None),
        lambda session, row: deploy_transitions.request_stop(session, row)[1],  # not an event
        deploy_transitions.finish_stop,
    ]
    for move in moves:
        with session_scope() as session:
            deployment = session.get(Deployment, deployment_id, with_for_update=True)
            assert deployment is not None
            effects = move(session, deployment)
        webhook_outbox.send(effects.webhook_deliveries)  # after the commit, as apply does
    sent = _sent_delivery_ids()
    assert _deliveries(deployment_id=deployment_id) == sorted(
        [
            (every, "deployment.healthy", "pending"),
            (healthy, "deployment.healthy", "pending"),
            (every, "deployment.unhealthy", "pending"),
            (every, "deployment.stopped", "pending"),
        ]
    )
    with session_scope() as session:
        ids = {
            str(i)
            for i in session.scalars(
                select(WebhookDelivery.id).where(WebhookDelivery.deployment_id == deployment_id)
            )
        }
    assert ids <= sent  # each sent once its transaction committed

    with pytest.raises(RuntimeError), session_scope() as session:  # rolled back: nothing
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None
        deployment.status = DeploymentStatus.HEALTHY.value
        deploy_transitions.finish_stop(session, deployment)
        raise RuntimeError("rolled back")
    assert len(_deliveries(deployment_id=deployment_id)) == 4


def _delivery(**where: Any) -> WebhookDelivery:
    with session_scope() as session:
        return session.scalars(select(WebhookDelivery).filter_by(**where)).one()


def _rendered(delivery: WebhookDelivery) -> dict[str, Any]:
    with session_scope() as session:
        body = render(session, delivery)
    return json.loads(body)


def test_the_body_shows_the_job_and_the_deployment_as_the_api_does(app) -> None:
    user = User(app.test_client())
    owner = uuid.UUID(user.profile["id"])
    webhook_id = _webhook(owner, ["*"])
    plain_id, plain_dispatch = _job(owner, labels={"team": "data"}, progress_total=3)
    file_id, _ = _job(
        owner,
        kind="file",
        processor="file.checksum",
        error_code="boom",
        error_message="it broke",
        input_file={"key": "k", "filename": "in.txt", "content_type": "text/plain", "size": 3},
    )
    assert try_succeed(plain_id, plain_dispatch, {"echo": "é"}) is not None
    _ended(file_id, transitions.finish_cancelled)
    for job_id in (plain_id, file_id):
        delivery = _delivery(job_id=job_id)
        body = _rendered(delivery)
        assert body["id"] == str(delivery.id) and body["type"] == delivery.event_type
        assert body["created_at"] == delivery.created_at.isoformat()
        shown = user.get(f"/api/v1/jobs/{job_id}")
        assert shown.status_code == 200
        assert body["data"] == shown.get_json()
    assert "download" in body["data"]["links"]  # the file job's, as url_for builds it

    deployment_id = uuid.uuid4()
    with session_scope() as session:
        session.add(
            Deployment(
                id=deployment_id,
                owner_id=owner,
                job_id=plain_id,
                repo_url="https://github.com/octo/hello",
                repo_key="github.com/octo/hello",
                env_names=["TOKEN"],
                status=DeploymentStatus.STARTING.value,
            )
        )
    with session_scope() as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None
        deploy_transitions.settle(session, deployment, "failed", "build_failed", "no Dockerfile")
    body = _rendered(_delivery(deployment_id=deployment_id))
    assert body["type"] == "deployment.failed"
    assert body["data"] == user.get(f"/api/v1/deployments/{deployment_id}").get_json()

    with session_scope() as session:
        ping = WebhookDelivery(webhook_id=webhook_id, event_type="ping", next_attempt_at=None)
        session.add(ping)
    assert _rendered(_delivery(id=ping.id))["data"] == {"webhook_id": str(webhook_id)}
