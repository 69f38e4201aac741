"""Diagnostic processors: run inside the worker process, no container.

They let operators probe a fleet (send one with `fleet`) and let tests drive every path of
the job lifecycle: progress and cancel (debug.sleep), results (debug.echo), retries, dead
letters and permanent failures (debug.fail).
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

from marshmallow import Schema, fields, validate

from shared.dispatch import queues
from shared.errors import PermanentJobError, RetryableJobError
from shared.processors.registry import JobContext, Kind, Processor, register, register_kind


class _FleetSchema(Schema):
    fleet = fields.String(
        load_default=queues.DIAGNOSTICS,
        validate=validate.OneOf(queues.JOB_QUEUES),
        metadata={"description": "Worker fleet (queue) that runs the probe."},
    )


class SleepParams(_FleetSchema):
    seconds = fields.Float(
        required=True,
        validate=validate.Range(min=0, max=300),
        metadata={"description": "Total time to sleep, at most 300 s."},
    )
    steps = fields.Integer(
        load_default=1,
        validate=validate.Range(min=1, max=1000),
        metadata={"description": "Progress steps; cancellation is honoured between steps."},
    )


class EchoParams(_FleetSchema):
    message = fields.String(
        required=True,
        validate=validate.Length(max=10_000),
        metadata={"description": "Returned unchanged as the job's result."},
    )


class FailParams(_FleetSchema):
    fail_times = fields.Integer(
        load_default=1,
        validate=validate.Range(min=0, max=100),
        metadata={"description": "Fail this many first attempts with a retryable error."},
    )
    permanent = fields.Boolean(
        load_default=False,
        metadata={"description": "Always fail with a non-retryable error instead."},
    )


def run_sleep(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    steps: int = params["steps"]
    pause = params["seconds"] / steps
    for step in range(1, steps + 1):
        time.sleep(pause)
        ctx.progress(step, steps, f"slept {step * pause:.2f}s")
    return {"slept_seconds": params["seconds"], "steps": steps}


def run_echo(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"message": params["message"]}


def run_fail(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    if params["permanent"]:
        raise PermanentJobError("debug_permanent_failure", "debug.fail was asked to fail for good")
    if ctx.attempt <= params["fail_times"]:
        raise RetryableJobError(
            "debug_transient_failure",
            f"debug.fail failing attempt {ctx.attempt} of the first {params['fail_times']}",
        )
    return {"succeeded_on_attempt": ctx.attempt}


class _Family(TypedDict):
    """The Processor fields every diagnostic shares (typed, so `**_COMMON` is checked)."""

    kind: str
    input: str
    queue: str
    task_name: str


_COMMON: _Family = {
    "kind": "diagnostic",
    "input": "none",
    "queue": queues.DIAGNOSTICS,
    "task_name": queues.TASK_DIAGNOSTIC,
}

register_kind(Kind("diagnostic", submit_path="/jobs", fleet_param=True))


register(
    Processor(
        name="debug.sleep",
        description=(
            "Sleep for a while, reporting progress at each step; cancellable between steps."
        ),
        params_schema=SleepParams,
        run=run_sleep,
        **_COMMON,
    )
)
register(
    Processor(
        name="debug.echo",
        description="Return the given message as the job's result.",
        params_schema=EchoParams,
        run=run_echo,
        **_COMMON,
    )
)
register(
    Processor(
        name="debug.fail",
        description=(
            "Fail the first attempts with a retryable error, or always with a permanent one."
        ),
        params_schema=FailParams,
        run=run_fail,
        **_COMMON,
    )
)
