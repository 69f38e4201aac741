"""Host ports for deployments: leased from a configured range, one deployment each.

Allocation takes a transaction-scoped advisory lock, so concurrent deploys (any number of
workers) pick ports one at a time; the lease's primary key makes a double lease impossible
anyway. Each candidate is also bound once on the host: a port held by something outside
the platform is skipped, not handed out.
"""

from __future__ import annotations

import socket
import uuid

from sqlalchemy import delete, func, select

from shared.config import Settings
from shared.db import session_scope
from shared.errors import RetryableJobError
from shared.models import PortLease

_LOCK_KEY = 0x646F636B_706F7274  # "dockport"


def port_is_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Connections in TIME_WAIT from a stopped deployment do not make a port busy; a
        # listener does (Linux refuses that bind even with SO_REUSEADDR).
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def lease_port(
    deployment_id: uuid.UUID, settings: Settings, avoid: frozenset[int] = frozenset()
) -> int:
    """Lease a port for the deployment (its existing lease, if any). `avoid`: ports the
    engine refused for this deployment although they looked free from here."""
    low, high = settings.deploy_port_range
    with session_scope() as session:
        session.execute(select(func.pg_advisory_xact_lock(_LOCK_KEY)))
        existing = session.scalar(
            select(PortLease.port).where(PortLease.deployment_id == deployment_id)
        )
        if existing is not None:
            return existing
        leased = set(
            session.scalars(select(PortLease.port).where(PortLease.port.between(low, high)))
        )
        for port in range(low, high + 1):
            if port in leased or port in avoid:
                continue
            if not port_is_free(settings.deploy_bind_address, port):
                continue
            session.add(PortLease(port=port, deployment_id=deployment_id))
            return port
    raise RetryableJobError("no_free_port", f"No free port in {low}-{high}.")


def release_port(deployment_id: uuid.UUID) -> None:
    with session_scope() as session:
        session.execute(delete(PortLease).where(PortLease.deployment_id == deployment_id))
