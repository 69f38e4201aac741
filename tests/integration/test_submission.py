"""The submit service (shared/jobs/submission.py) on the paths the HTTP tests cannot time: a
concurrent request with the same Idempotency-Key inserting first, a failure after the input
was staged, and a replay answered before any quota is spent."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from shared.db import new_session, session_scope
from shared.jobs.submission import Submission, submit_job
from shared.models import Job
from shared.processors import get_processor
from tests.helpers import User


class RecordingStager:
    """Stages nothing real; remembers what it was asked. `meanwhile` runs while staging."""

    def __init__(self, meanwhile: Any = None) -> None:
        self.staged: list[dict[str, Any]] = []
        self.discarded: list[dict[str, Any]] = []
        self.meanwhile = meanwhile

    def stage(self, job_id: uuid.UUID) -> dict[str, Any]:
        if self.meanwhile is not None:
            self.meanwhile()
        stored = {"key": f"users/x/jobs/{job_id}/input/in.bin", "size": 1}
        self.staged.append(stored)
        return stored

    def discard(self, stored: dict[str, Any]) -> None:
        self.discarded.append(stored)


class RecordingQuotas:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def count_submission(self, jobs: int = 1) -> None:
        self.calls.append("count")

    def checks_active_work(self, scheduled: int = 0) -> bool:
        return True

    def check_active_work(self, session: Any, jobs: int = 1, scheduled: int = 0) -> None:
        self.calls.append("active")


@pytest.fixture()
def owner(app) -> uuid.UUID:
    return uuid.UUID(User(app.test_client()).profile["id"])


def _submission(owner: uuid.UUID, key: str | None, **extra: Any) -> Submission:
    return Submission(
        owner_id=owner,
        processor=get_processor("debug.echo"),
        params={"message": "hello"},
        max_attempts=1,
        idempotency_key=key,
        **extra,
    )


def _submit(app, submission: Submission):
    redis_url = app.config["DOCKYARD_SETTINGS"].redis_url
    session = new_session()
    try:
        return submit_job(session, submission, celery=None, redis_url=redis_url)
    finally:
        session.close()


def _jobs_of(owner: uuid.UUID) -> list[Job]:
    with session_scope() as session:
        return list(session.scalars(select(Job).where(Job.owner_id == owner)))


def test_a_concurrent_request_with_the_same_key_wins_and_the_staged_input_is_discarded(
    app, owner
) -> None:
    key = f"race-{uuid.uuid4()}"
    winner: list[uuid.UUID] = []

    def competitor_commits_first() -> None:  # after our replay check, before our insert
        winner.append(_submit(app, _submission(owner, key)).job.id)

    stager = RecordingStager(meanwhile=competitor_commits_first)
    result = _submit(app, _submission(owner, key, stager=stager))
    assert not result.created and result.job.id == winner[0]
    assert stager.discarded == stager.staged and len(stager.staged) == 1
    assert [job.id for job in _jobs_of(owner)] == winner


def test_a_failure_after_staging_rolls_back_and_discards_the_input(app, owner) -> None:
    def broken_row(session: Any, job: Any) -> None:
        raise RuntimeError("the deployment row could not be added")

    stager = RecordingStager()
    with pytest.raises(RuntimeError):
        _submit(app, _submission(owner, None, stager=stager, with_job=broken_row))
    assert stager.discarded == stager.staged and len(stager.staged) == 1
    assert _jobs_of(owner) == []


def test_a_replay_is_answered_before_any_quota_is_spent(app, owner) -> None:
    key = f"replay-{uuid.uuid4()}"
    quotas = RecordingQuotas()
    first = _submit(app, _submission(owner, key, quotas=quotas))
    assert first.created and quotas.calls == ["count", "active"]
    replay = _submit(app, _submission(owner, key, quotas=quotas))
    assert not replay.created and replay.job.id == first.job.id
    assert quotas.calls == ["count", "active"]
