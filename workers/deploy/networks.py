"""One Docker network per user for their deployments (and their image builds).

Docker isolates bridge networks from each other (its DOCKER-ISOLATION chains drop traffic
between two bridges, including traffic DNATed to another network's published port), so an
app on `dockyard-user-<owner>` cannot reach another user's apps, nor the compose stack's
network where Redis, PostgreSQL and S3 live. What a bridge does not stop is traffic to the
host itself through the bridge's gateway address, or routed out to private networks: the
bridge interfaces are named `dy-<12 hex of the owner id>` so that one host firewall rule
(workers/deploy/firewall.py) covers every deploy network.

Networks are created on demand under a per-owner advisory lock (the engine does not enforce
unique network names) and removed by the periodic check once their owner has no active
deployment left.
"""

from __future__ import annotations

import logging
import uuid

import docker
from docker.errors import APIError, NotFound
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import session_scope
from shared.deploy.status import ACTIVE
from shared.models import Deployment
from workers.deploy import firewall
from workers.docker_errors import ENGINE_ERRORS, engine_failure

log = logging.getLogger(__name__)
LABEL_NETWORK = "dockyard.deploy-network"
LABEL_OWNER = "dockyard.owner"
BRIDGE_PREFIX = "dy-"


def network_name(owner_id: uuid.UUID) -> str:
    return f"dockyard-user-{owner_id}"


def bridge_name(owner_id: uuid.UUID) -> str:
    """The host interface: at most 15 characters, the prefix the firewall matches."""
    return f"{BRIDGE_PREFIX}{owner_id.hex[:12]}"


def ensure(client: docker.DockerClient, owner_id: uuid.UUID, settings: Settings) -> str:
    """The owner's network (created if missing); returns its name. The host firewall is
    (re)checked first, so no app starts on a deploy bridge the firewall does not cover."""
    firewall.ensure(settings)
    name = network_name(owner_id)
    try:
        with session_scope() as session:
            _lock(session, owner_id)
            existing = client.networks.list(names=[name], filters={"label": LABEL_NETWORK})
            if not any(network.name == name for network in existing):  # `names` matches parts
                client.networks.create(
                    name,
                    driver="bridge",
                    options={"com.docker.network.bridge.name": bridge_name(owner_id)},
                    labels={LABEL_NETWORK: "true", LABEL_OWNER: str(owner_id)},
                    check_duplicate=True,
                )
                log.info(
                    "deploy network created",
                    extra={"event": "deploy_network_created", "network": name},
                )
    except ENGINE_ERRORS as error:
        raise engine_failure(error) from error
    return name


def _lock(session: Session, owner_id: uuid.UUID) -> None:
    session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"deploy-network:{owner_id}"))))


def remove_if_unused(client: docker.DockerClient, owner_id: uuid.UUID) -> bool:
    """Remove the owner's network if they have no active deployment. The check runs under
    the owner's lock, the one `ensure` takes: a deploy's row is committed (starting) before
    its pipeline ensures the network, so either this sees it and keeps the network, or the
    pipeline's `ensure` comes after the removal and creates it again. The engine also
    refuses to remove a network that still has containers."""
    name = network_name(owner_id)
    with session_scope() as session:
        _lock(session, owner_id)
        busy = session.scalar(
            select(Deployment.id)
            .where(Deployment.owner_id == owner_id, Deployment.status.in_(ACTIVE))
            .limit(1)
        )
        if busy is not None:
            return False
        for network in client.networks.list(names=[name], filters={"label": LABEL_NETWORK}):
            if network.name != name:
                continue
            try:
                network.remove()
                return True
            except NotFound:
                pass
            except APIError as error:  # still has endpoints: a container the reaper removes
                log.info("deploy network kept: %s", error, extra={"event": "deploy_network_kept"})
    return False


def remove_unused(client: docker.DockerClient, limit: int) -> int:
    """The periodic check's pass: every deploy network whose owner has no active deployment
    (a stop that could not remove it, owners deleted since)."""
    removed = 0
    for network in client.networks.list(filters={"label": LABEL_NETWORK})[:limit]:
        try:
            owner = uuid.UUID((network.attrs.get("Labels") or {}).get(LABEL_OWNER, ""))
        except ValueError:
            continue
        removed += remove_if_unused(client, owner)
    return removed
