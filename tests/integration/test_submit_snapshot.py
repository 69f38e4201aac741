"""The submit path answers from a snapshot built from what it inserted, not from a read of
the row; the snapshot must say exactly what the database holds."""

from __future__ import annotations

import uuid

from sqlalchemy import inspect

from shared.db import session_scope
from shared.jobs.submission import Submission, insert_job
from shared.models import Job
from shared.processors import get_processor
from tests.helpers import User


def test_the_snapshot_of_a_new_job_matches_its_row(app) -> None:
    owner = uuid.UUID(User(app.test_client()).profile["id"])
    processor = get_processor("debug.echo")
    with session_scope() as session:
        submission = Submission(
            owner_id=owner,
            processor=processor,
            params={"message": "snapshot"},
            max_attempts=2,
            idempotency_key=f"snap-{uuid.uuid4()}",
            request_id="req-1",
        )
        input_file = {"key": "users/x/jobs/y/input/in.bin", "size": 3}
        snapshot = insert_job(session, submission, uuid.uuid4(), input_file)
        assert snapshot is not None
    with session_scope() as session:
        row = session.get(Job, snapshot.id)
        columns = [column.key for column in inspect(Job).column_attrs]
        assert {name: getattr(snapshot, name) for name in columns} == {
            name: getattr(row, name) for name in columns
        }
        assert snapshot.submitted_event_id is not None
