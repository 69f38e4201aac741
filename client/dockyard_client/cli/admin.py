"""`dockyard admin ...`: operators' commands (an admin's token; others get 403, exit 3)."""

from __future__ import annotations

import itertools
import sys
from typing import Any

import click

from dockyard_client.cli import exits
from dockyard_client.cli.exits import Refusal
from dockyard_client.cli.output import JSON_OPTION, emit_json, fields, table, when
from dockyard_client.cli.state import State, pass_state


@click.group()
def admin() -> None:
    """Operate the platform: dead letters, queues, stats (admins only)."""


@admin.group("dead-letters")
def dead_letters() -> None:
    """Jobs that used up their attempts."""


def _letter_filters(processor: str | None, error_code: str | None) -> dict[str, Any]:
    return {
        key: value
        for key, value in (("processor", processor), ("error_code", error_code))
        if value is not None
    }


@dead_letters.command("ls")
@click.option("--processor")
@click.option("--error-code")
@click.option(
    "--state",
    "letter_state",
    type=click.Choice(["waiting", "requeued", "all"]),
    default="waiting",
    show_default=True,
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@JSON_OPTION
@pass_state
def list_letters(
    state: State,
    processor: str | None,
    error_code: str | None,
    letter_state: str,
    limit: int,
    as_json: bool,
) -> None:
    """Dead letters, newest first."""
    found = state.client().dead_letters(
        state=letter_state, **_letter_filters(processor, error_code)
    )
    items = list(itertools.islice(found, limit))
    if as_json:
        emit_json(items)
        return
    table(
        state.out,
        ["ID", "JOB", "PROCESSOR", "ERROR", "ATTEMPTS", "FAILED", "REQUEUED"],
        (
            [
                d["id"],
                d.get("job_id"),
                d.get("processor"),
                (d.get("error") or {}).get("code"),
                d.get("attempts"),
                when(d.get("failed_at")),
                when(d.get("requeued_at")),
            ]
            for d in items
        ),
    )


@dead_letters.command("requeue")
@click.argument("letter_id", metavar="ID")
@JSON_OPTION
@pass_state
def requeue(state: State, letter_id: str, as_json: bool) -> None:
    """Queue a dead letter's job again."""
    answer = state.client().requeue_dead_letter(letter_id)
    if as_json:
        emit_json(answer)
        return
    state.out.print(f"job {answer.get('job_id')} queued again", highlight=False)


@dead_letters.command("purge")
@click.option("--processor")
@click.option("--error-code")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@JSON_OPTION
@pass_state
def purge(
    state: State, processor: str | None, error_code: str | None, yes: bool, as_json: bool
) -> None:
    """Delete every waiting dead letter (matching the filters)."""
    if not yes:
        if not sys.stdin.isatty():
            raise Refusal("purging dead letters needs --yes without a terminal to ask on")
        if not click.confirm("Delete the matching dead letters?", err=True):
            exits.leave(exits.FAILED)
    filters = _letter_filters(processor, error_code)
    affected, remaining = 0, 0
    while True:  # the API deletes up to 1000 a call
        answer = state.client().purge_dead_letters(**filters)
        affected += int(answer.get("affected") or 0)
        remaining = int(answer.get("remaining") or 0)
        if not answer.get("affected") or not remaining:
            break
    if as_json:
        emit_json({"affected": affected, "remaining": remaining})
        return
    state.out.print(f"{affected} dead letter(s) deleted, {remaining} left", highlight=False)


@admin.group("queues")
def queues() -> None:
    """The job queues: depth, workers, pause and resume."""


def _depth(queue: dict[str, Any]) -> str:
    depth = queue.get("depth") or {}
    return " ".join(f"{name}={depth.get(name, 0)}" for name in ("high", "normal", "low"))


@queues.command("ls")
@JSON_OPTION
@pass_state
def list_queues(state: State, as_json: bool) -> None:
    """Each job queue: waiting jobs per priority, paused, live workers."""
    items = state.client().queues()
    if as_json:
        emit_json(items)
        return
    table(
        state.out,
        ["NAME", "DEPTH", "PAUSED", "WORKERS", "OLDEST WAITING"],
        (
            [
                q["name"],
                _depth(q),
                q.get("paused"),
                len(q.get("workers") or []),
                f"{q['oldest_waiting_seconds']:.0f}s"
                if q.get("oldest_waiting_seconds") is not None
                else "",
            ]
            for q in items
        ),
    )


@queues.command("pause")
@click.argument("name")
@JSON_OPTION
@pass_state
def pause(state: State, name: str, as_json: bool) -> None:
    """Hold the queue's jobs (running ones finish)."""
    queue = state.client().pause_queue(name)
    if as_json:
        emit_json(queue)
        return
    state.out.print(f"queue {name} paused", highlight=False)


@queues.command("resume")
@click.argument("name")
@JSON_OPTION
@pass_state
def resume(state: State, name: str, as_json: bool) -> None:
    """Release the queue's held jobs."""
    queue = state.client().resume_queue(name)
    if as_json:
        emit_json(queue)
        return
    state.out.print(f"queue {name} resumed", highlight=False)


@admin.command("stats")
@JSON_OPTION
@pass_state
def stats(state: State, as_json: bool) -> None:
    """Jobs and deployments by status, queue depths, workers, dead letters."""
    overview = state.client().stats()
    if as_json:
        emit_json(overview)
        return

    def counts(values: dict[str, Any] | None) -> str:
        return ", ".join(f"{key} {value}" for key, value in (values or {}).items()) or "-"

    fields(
        state.out,
        [
            ("jobs", counts(overview.get("jobs_by_status"))),
            ("deployments", counts(overview.get("deployments_by_status"))),
            ("queues", counts(overview.get("queue_depths"))),
            ("paused", ", ".join(overview.get("paused_queues") or []) or "-"),
            ("workers online", overview.get("workers_online_count")),
            ("dead letters", overview.get("dead_letters_waiting")),
        ],
    )
