"""The state machine allows exactly the documented moves."""

from __future__ import annotations

import logging

import pytest

from shared.jobs.status import (
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    JobStatus,
    can_transition,
    check_transition,
)

S = JobStatus


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.QUEUED, S.RUNNING),
        (S.RUNNING, S.SUCCEEDED),
        (S.RUNNING, S.RETRYING),
        (S.RETRYING, S.RUNNING),
        (S.RUNNING, S.DEAD),
        (S.FAILED, S.QUEUED),
        (S.DEAD, S.QUEUED),
        (S.CANCELLED, S.QUEUED),
        (S.QUEUED, S.CANCELLED),
        (S.RUNNING, S.CANCELLED),
    ],
)
def test_allowed(current: JobStatus, target: JobStatus) -> None:
    assert can_transition(current, target)
    check_transition("job", current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.SUCCEEDED, S.QUEUED),
        (S.SUCCEEDED, S.RUNNING),
        (S.QUEUED, S.SUCCEEDED),
        (S.FAILED, S.RUNNING),
        (S.CANCELLED, S.RUNNING),
        (S.QUEUED, S.DEAD),
        (S.DEAD, S.RUNNING),
        (S.RETRYING, S.SUCCEEDED),
    ],
)
def test_refused_and_logged(current: JobStatus, target: JobStatus, caplog) -> None:
    assert not can_transition(current, target)
    with caplog.at_level(logging.WARNING), pytest.raises(IllegalTransition):
        check_transition("job-1", current, target)
    assert any(getattr(r, "event", "") == "illegal_transition" for r in caplog.records)


def test_every_status_has_rules_and_terminal_states_only_requeue() -> None:
    assert set(TRANSITIONS) == set(JobStatus)
    for status in TERMINAL:
        assert TRANSITIONS[status] <= {S.QUEUED}
