"""Every deployment move goes through shared/deploy/transitions.py: its guard refuses an
illegal move (leaving the row as it was), it sets its fields and ends the port lease in the
caller's transaction, and what it returns (webhook deliveries, stop messages) is applied by
the caller after the commit: whoever takes a message finds the committed state. Real
PostgreSQL; the broker is a recorder that reads the database, in its own session, at the
moment each message is sent."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.clock import now
from shared.db import session_scope
from shared.deploy import transitions
from shared.deploy.status import DeploymentStatus, IllegalDeploymentTransition
from shared.dispatch import queues
from shared.models import Deployment, PortLease, Webhook, WebhookDelivery
from shared.webhooks.status import DeliveryStatus
from tests.helpers import User

S = DeploymentStatus
PORT_BASE = 21500  # leases only: nothing binds these ports


@dataclass
class Seen:
    """A message as the broker got it, with what a worker would then find in PostgreSQL."""

    task: str
    kwargs: dict[str, Any]
    args: list[Any]
    countdown: float | None
    deployment_status: str | None
    delivery_status: str | None


@dataclass
class RecordingBroker:
    """Stands for the Celery app: records each send_task and what the database holds then."""

    fail: bool = False
    seen: list[Seen] = field(default_factory=list)
    conf: Any = field(default_factory=lambda: SimpleNamespace(broker_write_url="memory://"))

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        kwargs, args = kwargs or {}, args or []
        with session_scope() as session:
            deployment = session.get(Deployment, uuid.UUID(args[0])) if args else None
            delivery = (
                session.get(WebhookDelivery, uuid.UUID(kwargs["delivery_id"]))
                if "delivery_id" in kwargs
                else None
            )
            self.seen.append(
                Seen(
                    name,
                    kwargs,
                    args,
                    options.get("countdown"),
                    deployment.status if deployment else None,
                    delivery.status if delivery else None,
                )
            )


@pytest.fixture()
def owner(app: Any) -> uuid.UUID:
    """A user with one webhook for every event."""
    owner_id = uuid.UUID(User(app.test_client()).profile["id"])
    with session_scope() as session:
        session.add(
            Webhook(
                id=uuid.uuid4(),
                owner_id=owner_id,
                url="https://hooks.example.com/deploy-transitions",
                events=["*"],
                labels={},
                secret="s",
                enabled=True,
            )
        )
    return owner_id


_ports = iter(range(PORT_BASE, PORT_BASE + 400))


def _deployment(owner: uuid.UUID, status: DeploymentStatus, **fields: Any) -> uuid.UUID:
    """A deployment in `status`; one that holds a port gets a lease."""
    deployment_id = uuid.uuid4()
    with session_scope() as session:
        session.add(
            Deployment(
                id=deployment_id,
                owner_id=owner,
                job_id=uuid.uuid4(),
                repo_url="https://github.com/dockyard-tests/transitions",
                repo_key="github.com/dockyard-tests/transitions",
                status=status.value,
                env="token",
                **fields,
            )
        )
        session.flush()
        if status not in (S.STOPPED, S.FAILED):
            session.add(PortLease(port=next(_ports), deployment_id=deployment_id))
    return deployment_id


def _move(
    deployment_id: uuid.UUID, move: Callable[[Session, Deployment], Any]
) -> tuple[Any, Deployment]:
    """Run `move` on the locked row and commit; its result and the row as committed."""
    with session_scope() as session:
        deployment = session.get(Deployment, deployment_id, with_for_update=True)
        assert deployment is not None
        result = move(session, deployment)
    return result, _row(deployment_id)


def _row(deployment_id: uuid.UUID) -> Deployment:
    with session_scope() as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None
        session.expunge(deployment)
        return deployment


def _lease(deployment_id: uuid.UUID) -> int | None:
    with session_scope() as session:
        return session.scalar(
            select(PortLease.port).where(PortLease.deployment_id == deployment_id)
        )


def _events(deployment_id: uuid.UUID) -> list[str]:
    with session_scope() as session:
        return sorted(
            session.scalars(
                select(WebhookDelivery.event_type).where(
                    WebhookDelivery.deployment_id == deployment_id
                )
            )
        )


# -- guards ----------------------------------------------------------------------------------

ILLEGAL: list[tuple[DeploymentStatus, Callable[[Session, Deployment], Any]]] = [
    (S.STOPPING, lambda session, row: transitions.mark_healthy(session, row, "http://x")),
    (S.STOPPED, lambda session, row: transitions.mark_healthy(session, row, "http://x")),
    (S.FAILED, lambda session, row: transitions.mark_healthy(session, row, "http://x")),
    (S.FAILED, transitions.finish_stop),
    (S.STOPPED, transitions.finish_stop),  # a stop, once done, is never done again
]


@pytest.mark.parametrize(("status", "move"), ILLEGAL)
def test_an_illegal_move_is_refused_and_changes_nothing(
    owner: uuid.UUID,
    status: DeploymentStatus,
    move: Callable[[Session, Deployment], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    deployment_id = _deployment(owner, status)
    lease = _lease(deployment_id)
    with caplog.at_level(logging.WARNING), pytest.raises(IllegalDeploymentTransition):
        _move(deployment_id, move)
    row = _row(deployment_id)
    assert row.status == status.value and row.url is None and row.stopped_at is None
    assert _lease(deployment_id) == lease and _events(deployment_id) == []
    assert any(getattr(r, "event", "") == "illegal_deployment_transition" for r in caplog.records)


def test_a_stop_of_a_starting_deployment_is_refused_with_its_job(owner: uuid.UUID) -> None:
    deployment_id = _deployment(owner, S.STARTING)
    with pytest.raises(transitions.DeploymentStarting) as refused:
        _move(deployment_id, transitions.request_stop)
    assert refused.value.code == "deployment_starting"
    assert refused.value.job_id == _row(deployment_id).job_id
    assert _row(deployment_id).status == "starting"


@pytest.mark.parametrize("status", [S.STOPPED, S.FAILED])
def test_a_stop_of_an_ended_deployment_is_answered_as_is(
    owner: uuid.UUID, status: DeploymentStatus
) -> None:
    deployment_id = _deployment(owner, status)
    before = _row(deployment_id).updated_at
    (stopping, effects), row = _move(deployment_id, transitions.request_stop)
    assert stopping is False and effects == transitions.Effects()
    assert row.status == status.value and row.updated_at == before


@pytest.mark.parametrize("status", [S.STARTING, S.STOPPING, S.STOPPED, S.FAILED])
def test_a_check_leaves_a_deployment_no_longer_live_alone(
    owner: uuid.UUID, status: DeploymentStatus
) -> None:
    deployment_id = _deployment(owner, status)
    effects, row = _move(
        deployment_id, lambda session, row: transitions.record_health(session, row, False, "log")
    )
    assert effects == transitions.Effects()
    assert row.status == status.value and row.checked_at is None and row.runtime_log is None


@pytest.mark.parametrize(
    ("status", "job_status"),
    [(S.HEALTHY, "failed"), (S.STOPPING, "cancelled"), (S.STARTING, "succeeded")],
)
def test_settle_moves_only_a_starting_deployment_whose_job_ended_without_it(
    owner: uuid.UUID, status: DeploymentStatus, job_status: str
) -> None:
    deployment_id = _deployment(owner, status)
    settled, row = _move(
        deployment_id,
        lambda session, row: transitions.settle(session, row, job_status, "boom", "it broke"),
    )
    assert settled is None and row.status == status.value and row.error_code is None


# -- moves and their effects -----------------------------------------------------------------


def test_a_stop_request_is_sent_after_its_commit(owner: uuid.UUID) -> None:
    deployment_id = _deployment(owner, S.UNHEALTHY)
    (stopping, effects), row = _move(deployment_id, transitions.request_stop)
    assert stopping is True and row.status == "stopping"
    assert row.updated_at > now() - timedelta(seconds=30)
    assert effects.stops == [transitions.StopMessage(deployment_id)]
    assert effects.webhook_deliveries == []  # `stopping` is not a webhook event
    broker = RecordingBroker()
    effects.apply(broker)  # type: ignore[arg-type]
    [stop] = broker.seen
    assert (stop.task, stop.args, stop.countdown) == (
        queues.TASK_DEPLOY_STOP,
        [str(deployment_id)],
        None,
    )
    assert stop.deployment_status == "stopping"  # what the stop task then finds

    # A repeated stop sends the task again.
    (stopping, again), _row_again = _move(deployment_id, transitions.request_stop)
    assert stopping is True and again.stops == [transitions.StopMessage(deployment_id)]


def test_a_finished_stop_ends_the_lease_and_its_delivery_follows_the_commit(
    owner: uuid.UUID,
) -> None:
    deployment_id = _deployment(owner, S.STOPPING)
    assert _lease(deployment_id) is not None
    effects, row = _move(deployment_id, transitions.finish_stop)
    assert row.status == "stopped" and row.stopped_at is not None
    assert _lease(deployment_id) is None
    assert _events(deployment_id) == ["deployment.stopped"]
    assert len(effects.webhook_deliveries) == 1 and effects.stops == []
    broker = RecordingBroker()
    effects.apply(broker)  # type: ignore[arg-type]
    [sent] = broker.seen
    assert sent.task == queues.TASK_WEBHOOK_DELIVER
    assert sent.kwargs == {"delivery_id": str(effects.webhook_deliveries[0])}
    assert sent.delivery_status == DeliveryStatus.PENDING  # committed before it was sent


def test_a_rolled_back_move_leaves_nothing_to_send(owner: uuid.UUID) -> None:
    deployment_id = _deployment(owner, S.HEALTHY)
    with pytest.raises(RuntimeError), session_scope() as session:
        deployment = session.get(Deployment, deployment_id, with_for_update=True)
        assert deployment is not None
        effects = transitions.finish_stop(session, deployment)
        assert len(effects.webhook_deliveries) == 1  # recorded in the open transaction
        raise RuntimeError("rolled back")
    assert _row(deployment_id).status == "healthy" and _lease(deployment_id) is not None
    assert _events(deployment_id) == []


def test_healthy_then_checks_tell_webhooks_only_of_a_change(owner: uuid.UUID) -> None:
    deployment_id = _deployment(owner, S.STARTING, error_code="old", error_message="old")
    effects, row = _move(
        deployment_id,
        lambda session, row: transitions.mark_healthy(session, row, "http://hello.localhost"),
    )
    assert row.status == "healthy" and row.url == "http://hello.localhost"
    assert row.healthy_at is not None and row.checked_at is not None
    assert row.error_code is None and row.error_message is None
    assert len(effects.webhook_deliveries) == 1

    def check(healthy: bool, tail: str | None) -> Callable[[Session, Deployment], Any]:
        return lambda session, row: transitions.record_health(session, row, healthy, tail)

    same, row = _move(deployment_id, check(True, "line 1"))
    assert same == transitions.Effects() and row.runtime_log == "line 1"
    worse, row = _move(deployment_id, check(False, None))
    assert row.status == "unhealthy" and row.runtime_log == "line 1"  # the last tail kept
    assert len(worse.webhook_deliveries) == 1
    assert _events(deployment_id) == ["deployment.healthy", "deployment.unhealthy"]
    assert _lease(deployment_id) is not None  # a live deployment keeps its port


def test_settle_fails_or_stops_a_starting_deployment(owner: uuid.UUID) -> None:
    failed_id = _deployment(owner, S.STARTING)
    effects, row = _move(
        failed_id,
        lambda session, row: transitions.settle(session, row, "dead", "build_failed", "no"),
    )
    assert effects is not None and len(effects.webhook_deliveries) == 1
    assert (row.status, row.error_code, row.error_message) == ("failed", "build_failed", "no")
    assert row.env is None and _lease(failed_id) is None  # nothing can start it again

    cancelled_id = _deployment(owner, S.STARTING)
    effects, row = _move(
        cancelled_id,
        lambda session, row: transitions.settle(session, row, "cancelled", None, None),
    )
    assert effects is not None and row.status == "stopped" and row.stopped_at is not None
    assert row.env == "token" and _lease(cancelled_id) is None  # kept for the retention
    assert _events(failed_id) == ["deployment.failed"]
    assert _events(cancelled_id) == ["deployment.stopped"]


def test_a_retire_stays_live_and_sends_its_stop_after_the_grace(owner: uuid.UUID) -> None:
    old_id, new_id = _deployment(owner, S.HEALTHY), uuid.uuid4()
    effects, row = _move(old_id, lambda _session, row: transitions.retire(row, new_id, 30.0))
    assert row.status == "healthy" and row.replaced_by == new_id
    assert row.retire_at is not None and row.retire_at > now() + timedelta(seconds=20)
    assert effects.stops == [transitions.StopMessage(old_id, countdown=30.0)]
    broker = RecordingBroker()
    effects.apply(broker)  # type: ignore[arg-type]
    assert [(s.task, s.countdown) for s in broker.seen] == [(queues.TASK_DEPLOY_STOP, 30.0)]


def test_a_refused_stop_message_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """The periodic check finishes a stop, or a retire, whose message was lost."""
    effects = transitions.Effects(
        stops=[
            transitions.StopMessage(uuid.uuid4()),
            transitions.StopMessage(uuid.uuid4(), countdown=5.0),
        ]
    )
    with caplog.at_level(logging.WARNING):
        effects.apply(RecordingBroker(fail=True))  # type: ignore[arg-type]
    events = [getattr(r, "event", "") for r in caplog.records]
    assert "stop_unsent" in events and "retire_unsent" in events


def test_effects_of_several_moves_merge(owner: uuid.UUID) -> None:
    first, second = _deployment(owner, S.HEALTHY), _deployment(owner, S.UNHEALTHY)
    merged = transitions.Effects()
    with session_scope() as session:
        for deployment_id in (first, second):
            deployment = session.get(Deployment, deployment_id, with_for_update=True)
            assert deployment is not None
            merged.merge(transitions.request_stop(session, deployment)[1])
    broker = RecordingBroker()
    merged.apply(broker)  # type: ignore[arg-type]
    assert [(s.args, s.deployment_status) for s in broker.seen] == [
        ([str(first)], "stopping"),
        ([str(second)], "stopping"),
    ]


def test_the_stop_endpoint_answers_each_case_as_before(app: Any) -> None:
    """POST /deployments/{id}/stop over request_stop: 409 with the job to cancel while
    starting, 202 `stopping` when live, 200 as is once ended."""
    user = User(app.test_client())
    owner = uuid.UUID(user.profile["id"])
    starting, live, ended = (_deployment(owner, s) for s in (S.STARTING, S.HEALTHY, S.STOPPED))

    refused = user.post(f"/api/v1/deployments/{starting}/stop")
    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert (error["code"], error["message"], error["details"]) == (
        "deployment_starting",
        "The deployment is still starting; cancel its job to stop it.",
        {"job_id": str(_row(starting).job_id)},
    )
    accepted = user.post(f"/api/v1/deployments/{live}/stop")
    assert accepted.status_code == 202 and accepted.get_json()["status"] == "stopping"
    answered = user.post(f"/api/v1/deployments/{ended}/stop")
    assert answered.status_code == 200 and answered.get_json()["status"] == "stopped"
    assert answered.get_json()["id"] == str(ended)
