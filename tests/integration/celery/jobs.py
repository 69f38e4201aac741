"""Reading a job's outcome where it is recorded: its row in PostgreSQL and its events."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from shared.db import session_scope
from shared.models import DeadLetter, Job
from tests.helpers import User


def job_row(job_id: str) -> Job:
    with session_scope() as session:
        job = session.scalar(select(Job).where(Job.id == uuid.UUID(job_id)))
        assert job is not None
        session.expunge(job)
        return job


def dead_letters(job_id: str) -> list[DeadLetter]:
    with session_scope() as session:
        rows = list(
            session.scalars(select(DeadLetter).where(DeadLetter.job_id == uuid.UUID(job_id)))
        )
        for row in rows:
            session.expunge(row)
        return rows


def event_types(user: User, job_id: str) -> list[str]:
    return [e["type"] for e in user.events(job_id)]


def started_workers(user: User, job_id: str) -> list[str]:
    return [e["data"]["worker"] for e in user.events(job_id) if e["type"] == "started"]
