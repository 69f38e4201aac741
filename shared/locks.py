"""Transaction-scoped PostgreSQL advisory locks named by a UUID: a new job's row (held by its
submit until commit, waited on by a fast worker) and a user's submissions (so quota counts
cannot be raced past). One key function for both: a key is the UUID's first 8 bytes, so a
job and a user sharing a key is as unlikely as two random UUIDs sharing 64 bits.

The jobs of one batch are given ids that share their batch's key (`sharing_key`): the batch
holds one lock for all of them, however many, and a fast worker waiting on any one job's lock
waits for the batch's commit, exactly as for a single submit.
"""

from __future__ import annotations

import os
import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session


def lock_key(name: uuid.UUID) -> int:
    """The advisory-lock key of a UUID (a signed 64-bit int, as PostgreSQL takes it)."""
    return int.from_bytes(name.bytes[:8], "big", signed=True)


def lock(session: Session, name: uuid.UUID) -> None:
    """Wait for, then hold until the transaction ends, the advisory lock named by `name`."""
    session.execute(select(func.pg_advisory_xact_lock(lock_key(name))))


def sharing_key(name: uuid.UUID) -> uuid.UUID:
    """A new random (version 4) UUID whose lock key is `name`'s: its first 8 bytes are
    `name`'s (a version 4 UUID's version bits among them), the other 62 bits are random."""
    return uuid.UUID(bytes=name.bytes[:8] + os.urandom(8), version=4)
