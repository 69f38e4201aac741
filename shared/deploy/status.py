"""The deployment state machine: which status may follow which, and the named sets of
statuses each part of the platform reads (the check, quotas, ports, images, networks).

A pure table, with no ORM or broker import: the models read it for the column default and
the partial indexes, the API schemas for the list of statuses. What a move does (its fields,
its port lease, its webhook deliveries, the stop message) is `shared/deploy/transitions.py`,
the one place that changes a deployment's status.

A deployment is created `starting` with its deploy job. The job's pipeline brings it up
(`healthy`), or the job ends without it and `transitions.settle` marks it `failed` (or
`stopped` when the job was cancelled). The periodic check moves a live deployment between
`healthy` and `unhealthy`. A user's stop moves a live one to `stopping`; the stop task (or
a retire, or the check finishing a lost stop) removes its container and marks it `stopped`.
`stopped` and `failed` are final: a redeploy is a new deployment.

Adding a status: a member here, its moves in TRANSITIONS, its place in the named sets (the
unit tests check the sets partition the statuses), the move that enters it in
`shared/deploy/transitions.py` (and its webhook event, if any), and the README's list of
statuses. The API schema's list is built from this enum.
"""

from __future__ import annotations

import enum
import logging

log = logging.getLogger(__name__)


class DeploymentStatus(enum.StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


S = DeploymentStatus

#: The status a deployment is created with (by the deploy submission, with its job).
INITIAL = S.STARTING

#: Every legal move. `starting -> stopped` is a deploy job cancelled before the deployment
#: came up; `healthy/unhealthy -> stopped` (without `stopping`) is a retire of a replaced
#: deployment; `stopping -> stopping` is a repeated stop; `healthy -> healthy` and
#: `unhealthy -> unhealthy` are checks that found nothing new.
TRANSITIONS: dict[DeploymentStatus, frozenset[DeploymentStatus]] = {
    S.STARTING: frozenset({S.HEALTHY, S.STOPPED, S.FAILED}),
    S.HEALTHY: frozenset({S.HEALTHY, S.UNHEALTHY, S.STOPPING, S.STOPPED}),
    S.UNHEALTHY: frozenset({S.HEALTHY, S.UNHEALTHY, S.STOPPING, S.STOPPED}),
    S.STOPPING: frozenset({S.STOPPING, S.STOPPED}),
    S.STOPPED: frozenset(),
    S.FAILED: frozenset(),
}

#: Up and serving (or meant to): probed by the periodic check, retired when replaced,
#: stoppable by the user.
LIVE = frozenset({S.HEALTHY, S.UNHEALTHY})
#: On the way up (its deploy job runs) or down (its container is being removed).
TRANSITIONAL = frozenset({S.STARTING, S.STOPPING})
#: Final: no container, no port lease; a stop answers as is. LIVE, TRANSITIONAL and ENDED
#: partition the statuses.
ENDED = frozenset({S.STOPPED, S.FAILED})

#: Not ended: the deployment may still own a container, its image tag and its owner's
#: network, so none of these is removed from under it (the reaper, the image retention,
#: the network sweep), and the metrics gauge reports these.
ACTIVE = LIVE | TRANSITIONAL
#: Holds a host port lease: every move into ENDED deletes the lease, and the check
#: releases any lease left on a deployment no longer in this set.
HOLDS_PORT = ACTIVE
#: Counted against QUOTA_ACTIVE_DEPLOYMENTS: a deployment being stopped does not count,
#: so a user at the limit may deploy again as soon as they stop one.
COUNTS_FOR_QUOTA = frozenset({S.STARTING, S.HEALTHY, S.UNHEALTHY})


class IllegalDeploymentTransition(Exception):
    """A deployment status change the state machine does not allow."""

    def __init__(
        self, deployment_id: object, current: DeploymentStatus, target: DeploymentStatus
    ) -> None:
        self.deployment_id = deployment_id
        self.current = current
        self.target = target
        super().__init__(
            f"deployment {deployment_id}: illegal transition {current.value} -> {target.value}"
        )


def in_order(statuses: frozenset[DeploymentStatus]) -> list[DeploymentStatus]:
    """The statuses of a set in declaration order (for stable output such as metrics)."""
    return [status for status in DeploymentStatus if status in statuses]


def can_transition(current: DeploymentStatus | str, target: DeploymentStatus | str) -> bool:
    return DeploymentStatus(target) in TRANSITIONS[DeploymentStatus(current)]


def check_transition(
    deployment_id: object, current: DeploymentStatus | str, target: DeploymentStatus | str
) -> None:
    """Raise IllegalDeploymentTransition (and log it) unless current -> target is allowed."""
    current, target = DeploymentStatus(current), DeploymentStatus(target)
    if target not in TRANSITIONS[current]:
        log.warning(
            "illegal deployment transition refused",
            extra={
                "event": "illegal_deployment_transition",
                "deployment_id": str(deployment_id),
                "from_status": current.value,
                "to_status": target.value,
            },
        )
        raise IllegalDeploymentTransition(deployment_id, current, target)
