"""Every move a deployment makes, in one place: its guard, the fields it sets, the port lease
it ends, the webhook deliveries it records, and what follows its commit (the stop message,
the deliveries to send). The stop request lives here too, once, for every caller.

The rules (which status may follow which) are `shared/deploy/status.py`; this module is the
effects, as `shared/jobs/transitions.py` is for jobs. The API (stop, app deletion), the
deploy pipeline (healthy) and the deploy fleet's lifecycle (stop, settle, the periodic
check, retires) all call these functions, so "what happens on stop" is read here and
nowhere else. Each function works inside the caller's session and returns the `Effects` to
apply once the caller has committed: a stop message sent for an uncommitted `stopping` could
be taken by a worker that then finds the deployment still live, and a webhook delivery
message sent before its row commits finds no row.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from celery import Celery
from sqlalchemy import delete
from sqlalchemy.orm import Session

from shared.celery_app import app as celery_app
from shared.clock import now
from shared.deploy.status import ENDED, LIVE, DeploymentStatus, check_transition
from shared.dispatch import queues
from shared.jobs.status import JobStatus
from shared.models import Deployment, PortLease
from shared.webhooks import outbox as webhook_outbox

log = logging.getLogger(__name__)

S = DeploymentStatus

#: The webhook event of each status a deployment may change into (README, Webhooks). A move
#: into a status not named here (`stopping`) tells nobody.
WEBHOOK_EVENTS = {
    S.HEALTHY: webhook_outbox.DEPLOYMENT_HEALTHY,
    S.UNHEALTHY: webhook_outbox.DEPLOYMENT_UNHEALTHY,
    S.FAILED: webhook_outbox.DEPLOYMENT_FAILED,
    S.STOPPED: webhook_outbox.DEPLOYMENT_STOPPED,
}


@dataclass(frozen=True)
class StopMessage:
    """The deploy fleet's stop task for one deployment; a retire waits out its grace."""

    deployment_id: uuid.UUID
    countdown: float | None = None


@dataclass
class Effects:
    """What a committed deployment move still has to do outside the database."""

    webhook_deliveries: list[uuid.UUID] = field(default_factory=list)  # recorded, to send
    stops: list[StopMessage] = field(default_factory=list)

    def merge(self, other: Effects) -> Effects:
        """Gather the effects of several moves made in one transaction (an app's deletion)."""
        self.webhook_deliveries.extend(other.webhook_deliveries)
        self.stops.extend(other.stops)
        return self

    def apply(self, celery: Celery | None = None) -> None:
        """After the commit: send the deliveries and the stop messages. A message the broker
        refuses is logged, not raised: the dispatcher tick sends a due delivery again, and the
        periodic check finishes a stop (or a retire) whose message was lost."""
        webhook_outbox.send(self.webhook_deliveries, celery)
        for stop in self.stops:
            _send_stop(stop, celery or celery_app)


def _send_stop(stop: StopMessage, celery: Celery) -> None:
    try:
        celery.send_task(
            queues.TASK_DEPLOY_STOP,
            args=[str(stop.deployment_id)],
            queue=queues.DEPLOY,
            countdown=stop.countdown,
        )
    except Exception:
        if stop.countdown is None:
            log.warning("stop not sent", exc_info=True, extra={"event": "stop_unsent"})
        else:
            log.warning(
                "could not schedule a retire", exc_info=True, extra={"event": "retire_unsent"}
            )


class DeploymentStarting(Exception):
    """A stop asked of a deployment still starting: its deploy job is what to cancel (the
    job's end settles the deployment). HTTP 409 `deployment_starting`."""

    code = "deployment_starting"

    def __init__(self, deployment_id: uuid.UUID, job_id: uuid.UUID) -> None:
        self.deployment_id = deployment_id
        self.job_id = job_id
        self.message = "The deployment is still starting; cancel its job to stop it."
        super().__init__(self.message)


def _move(session: Session, deployment: Deployment, target: DeploymentStatus) -> Effects:
    """The only way a loaded (row-locked) deployment's status changes: the state machine is
    checked and the column keeps the plain string value, as a row loaded from the database
    has. A change into a status webhooks are told about records its deliveries in the same
    transaction; a check that finds nothing new (`healthy -> healthy`) tells nobody."""
    check_transition(deployment.id, deployment.status, target)
    changed = DeploymentStatus(deployment.status) is not target
    deployment.status = target.value
    if not changed or target not in WEBHOOK_EVENTS:
        return Effects()
    deliveries = webhook_outbox.record(
        session,
        owner_id=deployment.owner_id,
        event_type=WEBHOOK_EVENTS[target],
        deployment_id=deployment.id,
    )
    return Effects(webhook_deliveries=deliveries)


def _end(session: Session, deployment: Deployment, target: DeploymentStatus) -> Effects:
    """A move into ENDED: the deployment's host port lease goes with it (HOLDS_PORT)."""
    assert target in ENDED, "only a final status releases the port"
    effects = _move(session, deployment, target)
    session.execute(delete(PortLease).where(PortLease.deployment_id == deployment.id))
    return effects


# -- the deploy pipeline and the periodic check --------------------------------------------


def mark_healthy(session: Session, deployment: Deployment, url: str) -> Effects:
    """starting -> healthy: the deploy job brought it up and it answers at `url`. (Which
    release is its app's current one is the pipeline's business, in the same transaction.)"""
    effects = _move(session, deployment, S.HEALTHY)
    moment = now()
    deployment.url, deployment.healthy_at, deployment.checked_at = url, moment, moment
    deployment.error_code = deployment.error_message = None
    return effects


def record_health(
    session: Session, deployment: Deployment, healthy: bool, log_tail: str | None
) -> Effects:
    """A live deployment probed by the periodic check -> healthy or unhealthy, with the check
    time and the tail of its container's log (the last tail is kept when there is none). A
    deployment no longer live when its row is locked (stopped meanwhile) is left alone."""
    if deployment.status not in LIVE:
        return Effects()
    effects = _move(session, deployment, S.HEALTHY if healthy else S.UNHEALTHY)
    deployment.checked_at = now()
    if log_tail:
        deployment.runtime_log, deployment.runtime_log_at = log_tail, now()
    return effects


def settle(
    session: Session,
    deployment: Deployment,
    job_status: str,
    error_code: str | None,
    error_message: str | None,
) -> Effects | None:
    """A deploy job ended without bringing its deployment up: starting -> stopped (the job
    was cancelled) or failed (it failed or died, with the job's error). None when there is
    nothing to settle: the deployment is no longer starting, or its job has not ended so."""
    if deployment.status != S.STARTING:
        return None
    if job_status == JobStatus.CANCELLED:
        effects = _end(session, deployment, S.STOPPED)
        deployment.stopped_at = now()
    elif job_status in (JobStatus.FAILED, JobStatus.DEAD):
        effects = _end(session, deployment, S.FAILED)
        deployment.error_code, deployment.error_message = error_code, error_message
        # Nothing can start a failed deployment again (a retried job refuses it): its env
        # values are deleted now rather than kept for the retention.
        deployment.env = None
    else:
        return None
    return effects


# -- stopping ------------------------------------------------------------------------------


def request_stop(session: Session, deployment: Deployment) -> tuple[bool, Effects]:
    """A user's stop (POST /deployments/{id}/stop, or the deletion of its app): live or
    stopping -> stopping (True), the stop task sent after the commit; a repeated stop sends
    it again. An ended deployment is answered as is (False, nothing to do). One still
    starting is refused with DeploymentStarting: its job is what to cancel."""
    if deployment.status == S.STARTING:
        raise DeploymentStarting(deployment.id, deployment.job_id)
    if deployment.status in ENDED:
        return False, Effects()
    effects = _move(session, deployment, S.STOPPING)
    deployment.updated_at = now()  # the check finishes stops left `stopping` a minute
    return True, effects.merge(Effects(stops=[StopMessage(deployment.id)]))


def retire(deployment: Deployment, replaced_by: uuid.UUID, grace: float) -> Effects:
    """A live release replaced by a newer healthy one of its app is stopped after `grace`
    seconds (requests the proxy already sent it finish): its stop task is sent with that
    countdown, and `retire_at` lets the periodic check retire it if that message is lost.
    It stays live until then; the stop itself is `finish_stop`."""
    deployment.replaced_by = replaced_by
    deployment.retire_at = now() + timedelta(seconds=grace)
    return Effects(stops=[StopMessage(deployment.id, countdown=grace)])


def finish_stop(session: Session, deployment: Deployment) -> Effects:
    """Its container is gone (the stop task, a retire, or the check finishing a lost stop):
    stopping or live -> stopped, and its port lease released."""
    effects = _end(session, deployment, S.STOPPED)
    deployment.stopped_at = now()
    return effects
