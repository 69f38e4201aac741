"""`dockyard run`: submit a job (with a file or without), and with --wait follow it to its
end, print the outcome and save its result file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from dockyard_client.cli import exits, parsing, results, watching
from dockyard_client.cli.exits import Refusal
from dockyard_client.cli.output import emit_json
from dockyard_client.cli.state import State, pass_state

PRIORITIES = ("high", "normal", "low")


def when_options(at: str | None, in_: str | None) -> dict[str, Any]:
    """--at TIME -> run_at, --in DURATION -> delay_seconds (whole seconds, rounded up)."""
    if at is not None and in_ is not None:
        raise click.UsageError("give --at or --in, not both")
    if at is not None:
        return {"run_at": parsing.instant(at).isoformat()}
    if in_ is not None:
        return {"delay_seconds": math.ceil(parsing.duration(in_))}
    return {}


@click.command()
@click.argument("processor")
@click.argument(
    "file",
    required=False,
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
)
@click.option(
    "--param",
    "-p",
    "param_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter; the value is JSON when it parses (5, true, [1,2]), else text.",
)
@click.option("--params-json", metavar="JSON", help="All parameters as one JSON object.")
@click.option("--wait", "-w", is_flag=True, help="Follow the job to its end (progress bar).")
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    help="With --wait: where to save the result file (default: its name, here).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
@click.option("--priority", type=click.Choice(PRIORITIES))
@click.option("--label", "-l", multiple=True, metavar="KEY=VALUE", help="A label (repeatable).")
@click.option("--at", "at", metavar="TIME", help="Run at this ISO 8601 time.")
@click.option("--in", "in_", metavar="DURATION", help="Run after this delay: 90s, 5m, 2h.")
@click.option("--max-attempts", type=click.IntRange(min=1))
@click.option(
    "--cancel-on-interrupt",
    is_flag=True,
    help="With --wait: Ctrl-C cancels the job without asking.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the job as one JSON document.")
@pass_state
def run(
    state: State,
    processor: str,
    file: Path | None,
    param_pairs: tuple[str, ...],
    params_json: str | None,
    wait: bool,
    out: Path | None,
    force: bool,
    priority: str | None,
    label: tuple[str, ...],
    at: str | None,
    in_: str | None,
    max_attempts: int | None,
    cancel_on_interrupt: bool,
    as_json: bool,
) -> None:
    """Submit a job to PROCESSOR (with FILE for a file processor).

    Without --wait, print the job and return. With --wait, show its progress on stderr,
    print the outcome on stdout and save a result file; exit 0 if it succeeded, 1 if it
    failed, died or was cancelled, 130 on Ctrl-C (which asks whether to cancel the job).
    """
    params = parsing.params(param_pairs, params_json)
    options: dict[str, Any] = {
        "priority": priority,
        "labels": parsing.labels(label) or None,
        "max_attempts": max_attempts,
        **when_options(at, in_),
    }
    if out is not None and not wait:
        raise click.UsageError("--out needs --wait")
    if out is not None:
        results.check_out(out, force)  # before the job is even submitted
    client = state.client()
    if file is not None:
        job = client.submit_file(file, processor, params, **options)
    else:
        job = client.submit(processor, params, **options)
    if not wait:
        if as_json:
            emit_json(job)
        else:
            state.out.print(f"job {job['id']} {job['status']}", highlight=False)
        return
    job = watching.follow(state, job, cancel_on_interrupt=cancel_on_interrupt)
    saved = None
    if results.has_result_file(job):
        try:
            saved = results.save(state, job, out, force)
        except Refusal:
            _print_outcome(state, job, None, as_json)
            raise
    _print_outcome(state, job, saved, as_json)
    exits.leave(watching.outcome_code(job))


def _print_outcome(state: State, job: dict[str, Any], saved: Path | None, as_json: bool) -> None:
    if as_json:
        emit_json(job)
        if saved is not None:
            state.err.print(f"saved {saved}", highlight=False)
    else:
        state.out.print(watching.outcome_line(job, str(saved) if saved else None))
