"""The deployment state machine allows exactly the moves the code makes, and its named
sets are what their callers need (the check, the quota, port leases, the stop). The table is
pure: no ORM, broker or webhook import (what the moves do is tested with PostgreSQL, in
tests/integration/test_deploy_transitions.py). The webhook delivery statuses, a pure
table too, keep their stored values."""

from __future__ import annotations

import ast
import itertools
import logging
from pathlib import Path

import pytest

from shared.deploy import status as status_module
from shared.deploy.status import (
    ACTIVE,
    COUNTS_FOR_QUOTA,
    ENDED,
    HOLDS_PORT,
    INITIAL,
    LIVE,
    TRANSITIONAL,
    TRANSITIONS,
    DeploymentStatus,
    IllegalDeploymentTransition,
    can_transition,
    check_transition,
    in_order,
)
from shared.models import Deployment, WebhookDelivery
from shared.schemas.responses import DeploymentSchema
from shared.webhooks import status as delivery_status_module
from shared.webhooks.status import DeliveryStatus

S = DeploymentStatus

#: Written out independently of the table: who makes each move.
ALLOWED = {
    (S.STARTING, S.HEALTHY),  # the deploy pipeline's report step
    (S.STARTING, S.FAILED),  # settle_after_job: the job failed or died
    (S.STARTING, S.STOPPED),  # settle_after_job: the job was cancelled
    (S.HEALTHY, S.HEALTHY),  # the periodic check
    (S.HEALTHY, S.UNHEALTHY),
    (S.UNHEALTHY, S.HEALTHY),
    (S.UNHEALTHY, S.UNHEALTHY),
    (S.HEALTHY, S.STOPPING),  # POST /deployments/{id}/stop
    (S.UNHEALTHY, S.STOPPING),
    (S.STOPPING, S.STOPPING),  # a repeated stop
    (S.STOPPING, S.STOPPED),  # the stop task, or the check finishing a lost stop
    (S.HEALTHY, S.STOPPED),  # a retire of a replaced deployment
    (S.UNHEALTHY, S.STOPPED),
}
ALL_PAIRS = set(itertools.product(DeploymentStatus, repeat=2))


def test_values_are_the_http_contract() -> None:
    assert [s.value for s in DeploymentStatus] == [
        "starting",
        "healthy",
        "unhealthy",
        "stopping",
        "stopped",
        "failed",
    ]
    choices = DeploymentSchema().fields["status"].validate.choices  # type: ignore[union-attr]
    assert list(choices) == [s.value for s in DeploymentStatus]
    assert Deployment.__table__.c.status.default.arg == INITIAL == S.STARTING


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed(current: DeploymentStatus, target: DeploymentStatus) -> None:
    assert can_transition(current, target)
    assert can_transition(current.value, target.value)
    check_transition("deployment", current, target)


@pytest.mark.parametrize(("current", "target"), sorted(ALL_PAIRS - ALLOWED))
def test_refused_and_logged(
    current: DeploymentStatus, target: DeploymentStatus, caplog: pytest.LogCaptureFixture
) -> None:
    assert not can_transition(current, target)
    with caplog.at_level(logging.WARNING), pytest.raises(IllegalDeploymentTransition) as error:
        check_transition("deployment-1", current, target)
    assert (error.value.current, error.value.target) == (current, target)
    refused = [
        r for r in caplog.records if getattr(r, "event", "") == "illegal_deployment_transition"
    ]
    assert refused and refused[0].__dict__["from_status"] == current.value
    assert refused[0].__dict__["to_status"] == target.value


def test_the_table_is_exactly_the_moves_made() -> None:
    assert set(TRANSITIONS) == set(DeploymentStatus)
    table = {(current, target) for current, targets in TRANSITIONS.items() for target in targets}
    assert table == ALLOWED


def test_live_transitional_and_ended_partition_the_statuses() -> None:
    assert set(DeploymentStatus) == LIVE | TRANSITIONAL | ENDED
    assert not (LIVE & TRANSITIONAL) and not (LIVE & ENDED) and not (TRANSITIONAL & ENDED)


def test_ended_is_exactly_the_final_statuses_and_everything_is_reachable() -> None:
    assert {s for s, targets in TRANSITIONS.items() if not targets} == ENDED
    reached, frontier = {INITIAL}, [INITIAL]
    while frontier:
        for target in TRANSITIONS[frontier.pop()] - reached:
            reached.add(target)
            frontier.append(target)
    assert reached == set(DeploymentStatus)


def test_the_check_keeps_live_deployments_live() -> None:
    """Its UPDATE is guarded by LIVE and writes healthy or unhealthy: every such move is legal."""
    assert all(can_transition(current, target) for current in LIVE for target in LIVE)


def test_a_stop_moves_every_live_or_stopping_deployment_and_never_a_starting_one() -> None:
    stoppable = {s for s in DeploymentStatus if can_transition(s, S.STOPPING)}
    assert stoppable == LIVE | {S.STOPPING}
    assert stoppable == ACTIVE - {S.STARTING}
    assert {s for s in DeploymentStatus if can_transition(s, S.STOPPED)} == ACTIVE


def test_port_and_quota_sets() -> None:
    # Every move out of HOLDS_PORT goes into ENDED, where the lease is deleted.
    assert HOLDS_PORT == ACTIVE == set(DeploymentStatus) - ENDED
    for current, targets in TRANSITIONS.items():
        for target in targets:
            if current in HOLDS_PORT and target not in HOLDS_PORT:
                assert target in ENDED
    # A deployment being stopped frees its quota slot; one starting already takes one.
    assert ACTIVE - {S.STOPPING} == COUNTS_FOR_QUOTA


def test_in_order_follows_the_declaration() -> None:
    assert in_order(ACTIVE) == [S.STARTING, S.HEALTHY, S.UNHEALTHY, S.STOPPING]
    assert in_order(ENDED) == [S.STOPPED, S.FAILED]


def _imported_modules(module: object) -> set[str]:
    path = Path(str(getattr(module, "__file__", "")))
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", [status_module, delivery_status_module])
def test_the_status_tables_are_pure(module: object) -> None:
    """No ORM import (the models import these tables: no circle), no broker, no outbox."""
    assert _imported_modules(module) <= {"__future__", "enum", "logging"}


def test_delivery_status_values_are_the_stored_ones() -> None:
    assert [s.value for s in DeliveryStatus] == ["pending", "delivered", "failed"]
    table = WebhookDelivery.__table__
    assert table.c.status.default.arg == DeliveryStatus.PENDING  # type: ignore[attr-defined]
    due = next(index for index in table.indexes if index.name == "ix_webhook_deliveries_due")
    assert str(due.dialect_options["postgresql"]["where"]) == "status = 'pending'"
