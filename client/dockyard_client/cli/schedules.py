"""`dockyard schedules ...`: recurring jobs (cron or every N seconds)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import click

from dockyard_client.cli import parsing
from dockyard_client.cli.output import JSON_OPTION, emit_json, fields, pairs_text, table, when
from dockyard_client.cli.run import PRIORITIES
from dockyard_client.cli.state import State, pass_state


@click.group()
def schedules() -> None:
    """Recurring schedules: a job made at each occurrence."""


def _recurrence(schedule: dict[str, Any]) -> str:
    if schedule.get("cron"):
        return f"cron {schedule['cron']} ({schedule.get('timezone')})"
    return f"every {schedule.get('every_seconds')}s"


@schedules.command("ls")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@JSON_OPTION
@pass_state
def list_schedules(state: State, limit: int, as_json: bool) -> None:
    """Your schedules (an admin's: everyone's)."""
    items = list(itertools.islice(state.client().schedules(), limit))
    if as_json:
        emit_json(items)
        return
    table(
        state.out,
        ["ID", "NAME", "PROCESSOR", "WHEN", "ENABLED", "NEXT RUN", "LAST JOB"],
        (
            [
                s["id"],
                s.get("name"),
                s.get("processor"),
                _recurrence(s),
                s.get("enabled"),
                when(s.get("next_run_at")),
                s.get("last_job_id"),
            ]
            for s in items
        ),
    )


@schedules.command("show")
@click.argument("schedule_id", metavar="ID")
@JSON_OPTION
@pass_state
def show(state: State, schedule_id: str, as_json: bool) -> None:
    """One schedule."""
    schedule = state.client().schedule(schedule_id)
    if as_json:
        emit_json(schedule)
        return
    fields(
        state.out,
        [
            ("id", schedule["id"]),
            ("name", schedule.get("name")),
            ("processor", schedule.get("processor")),
            ("params", schedule.get("params")),
            ("when", _recurrence(schedule)),
            ("enabled", schedule.get("enabled")),
            ("priority", schedule.get("priority")),
            ("labels", pairs_text(schedule.get("labels")) or None),
            ("overlap", schedule.get("overlap")),
            ("misfire", schedule.get("misfire")),
            ("next run", when(schedule.get("next_run_at"))),
            ("last run", when(schedule.get("last_run_at"))),
            ("last job", schedule.get("last_job_id")),
        ],
    )


@schedules.command("create")
@click.argument("name")
@click.argument("processor")
@click.option("--cron", metavar="EXPR", help='Five fields, e.g. "30 2 * * *".')
@click.option("--every", metavar="DURATION", help="A period instead: 30s, 5m, 1h.")
@click.option("--timezone", metavar="TZ", help="IANA name the cron is read in (UTC).")
@click.option("--param", "-p", "param_pairs", multiple=True, metavar="KEY=VALUE")
@click.option("--params-json", metavar="JSON")
@click.option("--priority", type=click.Choice(PRIORITIES))
@click.option("--label", "-l", multiple=True, metavar="KEY=VALUE")
@click.option("--overlap", type=click.Choice(["skip", "allow"]))
@click.option("--misfire", type=click.Choice(["run_once", "skip"]))
@click.option("--max-attempts", type=click.IntRange(min=1))
@click.option("--disabled", is_flag=True, help="Create it paused.")
@JSON_OPTION
@pass_state
def create(
    state: State,
    name: str,
    processor: str,
    cron: str | None,
    every: str | None,
    timezone: str | None,
    param_pairs: tuple[str, ...],
    params_json: str | None,
    priority: str | None,
    label: tuple[str, ...],
    overlap: str | None,
    misfire: str | None,
    max_attempts: int | None,
    disabled: bool,
    as_json: bool,
) -> None:
    """Create schedule NAME running PROCESSOR on --cron or --every."""
    if (cron is None) == (every is None):
        raise click.UsageError("give exactly one of --cron and --every")
    body: dict[str, Any] = {
        "name": name,
        "processor": processor,
        "params": parsing.params(param_pairs, params_json),
        "cron": cron,
        "every_seconds": math.ceil(parsing.duration(every)) if every is not None else None,
        "timezone": timezone,
        "priority": priority,
        "labels": parsing.labels(label) or None,
        "overlap": overlap,
        "misfire": misfire,
        "max_attempts": max_attempts,
        "enabled": False if disabled else None,
    }
    schedule = state.client().create_schedule(
        **{key: value for key, value in body.items() if value is not None}
    )
    if as_json:
        emit_json(schedule)
        return
    state.out.print(
        f"schedule {schedule['id']} {schedule.get('name')}: next run "
        f"{when(schedule.get('next_run_at')) or '-'}",
        highlight=False,
    )


@schedules.command("delete")
@click.argument("schedule_id", metavar="ID")
@pass_state
def delete(state: State, schedule_id: str) -> None:
    """Delete a schedule (its jobs stay)."""
    state.client().delete_schedule(schedule_id)
    state.out.print(f"schedule {schedule_id} deleted", highlight=False)


@schedules.command("trigger")
@click.argument("schedule_id", metavar="ID")
@JSON_OPTION
@pass_state
def trigger(state: State, schedule_id: str, as_json: bool) -> None:
    """Run the schedule once now; prints the job."""
    job = state.client().trigger_schedule(schedule_id)
    if as_json:
        emit_json(job)
        return
    state.out.print(f"job {job['id']} {job.get('status')}", highlight=False)
