"""`dockyard jobs ...`: list, inspect, follow, cancel, retry and download jobs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import click

from dockyard_client.cli import exits, parsing, results, watching
from dockyard_client.cli.output import JSON_OPTION, emit_json, fields, pairs_text, size, table, when
from dockyard_client.cli.state import State, pass_state

STATUSES = (
    "scheduled",
    "queued",
    "running",
    "retrying",
    "succeeded",
    "failed",
    "dead",
    "cancelled",
)


@click.group()
def jobs() -> None:
    """List and manage jobs."""


def _progress(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    if progress.get("total"):
        return f"{progress.get('current') or 0}/{progress['total']}"
    return ""


@jobs.command("ls")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--processor")
@click.option("--kind")
@click.option("--label", "-l", multiple=True, metavar="KEY=VALUE", help="All must match.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@JSON_OPTION
@pass_state
def list_jobs(
    state: State,
    status: str | None,
    processor: str | None,
    kind: str | None,
    label: tuple[str, ...],
    limit: int,
    as_json: bool,
) -> None:
    """Your jobs (an admin's: everyone's), newest first."""
    found = state.client().jobs(
        status=status,
        kind=kind,
        processor=processor,
        label=parsing.label_filters(label) or None,
        limit=min(limit, 200),
    )
    items = list(itertools.islice(found, limit))
    if as_json:
        emit_json(items)
        return
    table(
        state.out,
        ["ID", "PROCESSOR", "STATUS", "PROGRESS", "ATTEMPTS", "CREATED", "LABELS"],
        (
            [
                job["id"],
                job.get("processor"),
                job.get("status"),
                _progress(job),
                f"{job.get('attempts')}/{job.get('max_attempts')}",
                when(job.get("created_at")),
                pairs_text(job.get("labels")),
            ]
            for job in items
        ),
    )


def _file_text(info: dict[str, Any] | None) -> str | None:
    if not info:
        return None
    text = f"{info.get('filename')} ({size(info.get('size'))})"
    return f"{text}, deleted" if info.get("deleted") else text


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@JSON_OPTION
@pass_state
def show(state: State, job_id: str, as_json: bool) -> None:
    """One job."""
    job = state.client().job(job_id)
    if as_json:
        emit_json(job)
        return
    error = job.get("error") or {}
    fields(
        state.out,
        [
            ("id", job["id"]),
            ("processor", job.get("processor")),
            ("status", job.get("status")),
            ("attempts", f"{job.get('attempts')}/{job.get('max_attempts')}"),
            ("progress", _progress(job) or None),
            ("priority", job.get("priority")),
            ("labels", pairs_text(job.get("labels")) or None),
            ("params", job.get("params")),
            ("error", f"{error['code']}: {error.get('message')}" if error else None),
            ("result", job.get("result")),
            ("input", _file_text(job.get("input"))),
            ("output", _file_text(job.get("output"))),
            ("run at", when(job.get("run_at"))),
            ("created", when(job.get("created_at"))),
            ("started", when(job.get("started_at"))),
            ("finished", when(job.get("finished_at"))),
        ],
    )


@jobs.command("events")
@click.argument("job_id", metavar="ID")
@JSON_OPTION
@pass_state
def events(state: State, job_id: str, as_json: bool) -> None:
    """The job's history, oldest first."""
    items = state.client().events(job_id)
    if as_json:
        emit_json(items)
        return
    table(
        state.out,
        ["EVENT", "TIME", "TYPE", "ATTEMPT", "DATA"],
        (
            [e.get("id"), when(e.get("created_at")), e.get("type"), e.get("attempt"), e.get("data")]
            for e in items
        ),
    )


@jobs.command("logs")
@click.argument("job_id", metavar="ID")
@JSON_OPTION
@pass_state
def logs(state: State, job_id: str, as_json: bool) -> None:
    """The job's logs: each attempt's output (file jobs' containers, deploy builds)."""
    items = state.client().logs(job_id)
    if as_json:
        emit_json(items)
        return
    for item in items:
        header = f"--- attempt {item.get('attempt')} {item.get('source')}"
        if item.get("truncated"):
            header += " (truncated)"
        state.err.print(header, style="dim", highlight=False)
        click.echo(str(item.get("content") or "").rstrip("\n"))


@jobs.command("watch")
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Each event as one JSON line.")
@pass_state
def watch(state: State, job_id: str, as_json: bool) -> None:
    """Print the job's events as they happen until it ends; exit 0 if it succeeded, 1
    otherwise. Ctrl-C stops watching (the job keeps running)."""
    client = state.client()
    try:
        for event in client.watch(job_id):
            if as_json:
                click.echo(json.dumps(event, default=str))
            else:
                state.out.print(watching.describe(event), highlight=False)
    except KeyboardInterrupt:
        exits.leave(exits.INTERRUPTED)
    exits.leave(watching.outcome_code(client.wait(job_id)))


@jobs.command("cancel")
@click.argument("job_id", metavar="ID")
@JSON_OPTION
@pass_state
def cancel(state: State, job_id: str, as_json: bool) -> None:
    """Cancel a job: waiting ones at once, a running one at its next progress step."""
    job = state.client().cancel(job_id)
    if as_json:
        emit_json(job)
        return
    done = job.get("status") == "cancelled"
    state.out.print(f"job {job_id} {'cancelled' if done else 'cancel requested'}", highlight=False)


@jobs.command("retry")
@click.argument("job_id", metavar="ID")
@JSON_OPTION
@pass_state
def retry(state: State, job_id: str, as_json: bool) -> None:
    """Queue a failed, dead or cancelled job again with a fresh attempt budget."""
    job = state.client().retry(job_id)
    if as_json:
        emit_json(job)
        return
    state.out.print(f"job {job_id} {job.get('status')}", highlight=False)


@jobs.command("download")
@click.argument("job_id", metavar="ID")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="File or directory.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@pass_state
def download(state: State, job_id: str, out: Path | None, force: bool) -> None:
    """Save a file job's result (default: its own name, in the current directory)."""
    if out is not None:
        results.check_out(out, force)
    job = state.client().job(job_id)
    path = results.save(state, job, out, force)
    state.out.print(f"saved {path}", highlight=False)
