"""Transaction-scoped PostgreSQL advisory locks named by a UUID: a new job's row (held by its
submit until commit, waited on by a fast worker) and a user's submissions (so quota counts
cannot be raced past). One key function for both: a key is the UUID's first 8 bytes, so a
job and a user sharing a key is as unlikely as two random UUIDs sharing 64 bits.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session


def lock_key(name: uuid.UUID) -> int:
    """The advisory-lock key of a UUID (a signed 64-bit int, as PostgreSQL takes it)."""
    return int.from_bytes(name.bytes[:8], "big", signed=True)


def lock(session: Session, name: uuid.UUID) -> None:
    """Wait for, then hold until the transaction ends, the advisory lock named by `name`."""
    session.execute(select(func.pg_advisory_xact_lock(lock_key(name))))
