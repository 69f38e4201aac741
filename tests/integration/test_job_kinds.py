"""A job kind is what its family registers: a toy kind, registered in-process (processor,
kind and executor), runs end to end through the API, the broker, a real worker and the
runner, with no line of the runner or the views knowing its name."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from marshmallow import Schema, fields

from shared.dispatch import queues
from shared.processors import Kind, Processor, registry
from tests.helpers import User, wait_for
from workers import executors


class ToyParams(Schema):
    text = fields.String(required=True)


@pytest.fixture()
def toy_kind(monkeypatch: pytest.MonkeyPatch) -> list[tuple[uuid.UUID, str]]:
    outcomes: list[tuple[uuid.UUID, str]] = []

    def run(context: Any, processor: Processor, params: dict[str, Any], *_: Any) -> dict[str, Any]:
        context.progress(1, 1, "reversed")
        return {"reversed": params["text"][::-1], "processor": processor.name}

    processor = Processor(
        name="toy.reverse",
        kind="toy",
        description="Reverses a text (a test's own kind).",
        input="none",
        params_schema=ToyParams,
        queue=queues.DIAGNOSTICS,
        task_name=queues.TASK_DIAGNOSTIC,
    )
    # Registered for this test only (monkeypatch puts the registries back afterwards).
    monkeypatch.setitem(registry._KINDS, "toy", Kind("toy", submit_path="/jobs"))
    monkeypatch.setitem(registry._REGISTRY, processor.name, processor)
    monkeypatch.setitem(
        executors._EXECUTORS,
        "toy",
        executors.Executor(
            run=run, after_outcome=lambda job, outcome, _s: outcomes.append((job, outcome))
        ),
    )
    return outcomes


def test_a_kind_registered_in_process_runs_end_to_end(app, job_worker, toy_kind) -> None:
    user = User(app.test_client())
    job = user.submit("toy.reverse", {"text": "dockyard"})
    done = user.wait_status(job["id"], "succeeded")
    assert done["kind"] == "toy"
    assert done["result"] == {"reversed": "draykcod", "processor": "toy.reverse"}
    assert "download" not in done["links"]  # not a kind with a result file
    wait_for(
        lambda: toy_kind == [(uuid.UUID(job["id"]), "succeeded")],
        message="the kind's after-outcome hook",
    )
    types = [event["type"] for event in user.events(job["id"])]
    assert types == ["submitted", "started", "progress", "succeeded"]


@pytest.mark.parametrize(
    ("processor", "endpoint"),
    [("image.thumbnail", "/api/v1/jobs/files"), ("deploy.repository", "/api/v1/jobs/deploy")],
)
def test_a_processor_sent_to_the_wrong_endpoint_is_told_its_own(
    app, processor: str, endpoint: str
) -> None:
    """The kind's registered submit path, not a branch in the view, names the endpoint."""
    user = User(app.test_client())
    response = user.post("/api/v1/jobs", json={"processor": processor, "params": {}})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "wrong_endpoint" and error["details"]["endpoint"] == endpoint
