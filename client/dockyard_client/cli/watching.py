"""Following one job to its end: the live progress bar on stderr (fed by the job's progress
events), the outcome line on stdout, and what Ctrl-C does (ask whether to cancel, or cancel
at once with --cancel-on-interrupt; a second Ctrl-C leaves at once)."""

from __future__ import annotations

import json
import sys
from types import TracebackType
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from dockyard_client.cli import exits
from dockyard_client.cli.state import State
from dockyard_client.errors import DockyardError

#: The job's status once an event of this type has happened (other events leave it).
STATUS_AFTER = {
    "started": "running",
    "retry_scheduled": "retrying",
    "held": "held (queue paused)",
    "released": "queued",
    "requeued": "queued",
    "succeeded": "succeeded",
    "failed": "failed",
    "dead_lettered": "dead",
    "cancel_requested": "cancelling",
    "cancelled": "cancelled",
}
STATUS_STYLES = {"succeeded": "green", "failed": "red", "dead": "red", "cancelled": "yellow"}


def describe(event: dict[str, Any]) -> str:
    """One event as a short line: `progress 3/5 slept 3.00s`, `attempt_failed code: msg`."""
    data = event.get("data") or {}
    kind = str(event.get("type"))
    if kind == "progress":
        text = f"progress {data.get('current')}/{data.get('total')}"
        return f"{text} {data['message']}" if data.get("message") else text
    error = data.get("error")
    if isinstance(error, dict):
        return f"{kind} {error.get('code')}: {error.get('message')}"
    if data.get("error_code"):
        return f"{kind} {data.get('error_code')}: {data.get('error_message')}"
    if kind == "retry_scheduled" and data.get("delay") is not None:
        return f"{kind} in {data['delay']}s"
    return kind


class ProgressView:
    """The job's progress on stderr: a rich bar on a terminal, plain lines elsewhere (a
    log file or a pipe gets one line per event, not a redrawn bar)."""

    def __init__(self, console: Console, job: dict[str, Any]) -> None:
        self.console = console
        self.job_id = str(job["id"])
        self.label = str(job.get("processor") or "job")
        self.status = str(job.get("status") or "queued")
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> ProgressView:
        if self.console.is_terminal:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.progress.start()
            self.task = self.progress.add_task(self._description(), total=None)
        else:
            self.console.print(f"job {self.job_id} {self.status}", highlight=False)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _description(self, message: str = "") -> str:
        text = f"{self.label} {self.status}"
        return f"{text}: {message}" if message else text

    def update(self, event: dict[str, Any]) -> None:
        """Move the bar (progress events) or say what happened (anything else)."""
        kind = str(event.get("type"))
        data = event.get("data") or {}
        self.status = STATUS_AFTER.get(kind, self.status)
        if self.progress is None or self.task is None:
            self.console.print(f"job {self.job_id} {describe(event)}", highlight=False)
            return
        if kind == "progress" and data.get("total"):
            self.progress.update(
                self.task,
                total=float(data["total"]),
                completed=float(data.get("current") or 0),
                description=self._description(str(data.get("message") or "")),
            )
        elif kind == "succeeded":
            total = self.progress.tasks[0].total or 1.0
            self.progress.update(
                self.task, total=total, completed=total, description=self._description()
            )
        else:
            if kind not in ("submitted", "started", "progress"):
                self.progress.console.print(f"  {describe(event)}", highlight=False)
            self.progress.update(self.task, description=self._description())


def follow(state: State, job: dict[str, Any], *, cancel_on_interrupt: bool) -> dict[str, Any]:
    """Show the job's events until it ends and return it as it ended; Ctrl-C -> exit 130."""
    client = state.client()
    job_id = str(job["id"])
    try:
        with ProgressView(state.err, job) as view:
            for event in client.watch(job_id):
                view.update(event)
        return client.wait(job_id)
    except KeyboardInterrupt:
        interrupted(state, job_id, cancel=cancel_on_interrupt)


def interrupted(state: State, job_id: str, *, cancel: bool) -> NoReturn:
    """Ctrl-C while following a job: cancel it when asked to (or when the user says so),
    then exit 130. A second Ctrl-C, during the question or the cancel, exits at once."""
    try:
        if cancel or _confirm_cancel(state, job_id):
            job = state.client().cancel(job_id)
            done = job.get("status") == "cancelled"
            state.err.print(
                f"job {job_id} {'cancelled' if done else 'cancel requested'}", highlight=False
            )
        else:
            state.err.print(
                f"job {job_id} left running (dockyard jobs cancel {job_id})", highlight=False
            )
    except (KeyboardInterrupt, click.exceptions.Abort):  # Abort: Ctrl-C inside the prompt
        pass
    except DockyardError as error:
        exits.show_error(state.err, error, api_url=state.api_url)
    exits.leave(exits.INTERRUPTED)


def _confirm_cancel(state: State, job_id: str) -> bool:
    """Ask on stderr; without a terminal to answer from, the job is left running."""
    if not sys.stdin.isatty():
        return False
    state.err.print()
    return click.confirm(f"Cancel job {job_id}?", default=False, err=True)


def outcome_code(job: dict[str, Any]) -> int:
    """0 for a job that succeeded, 1 for failed, dead or cancelled."""
    return exits.OK if job.get("status") == "succeeded" else exits.FAILED


def outcome_line(job: dict[str, Any], saved: str | None = None) -> Text:
    """`job <id> succeeded: <result>` / `job <id> failed: <code>: <message>`."""
    status = str(job.get("status"))
    line = Text(f"job {job.get('id')} ") + Text(status, style=STATUS_STYLES.get(status, ""))
    error = job.get("error")
    if saved is not None:
        line += Text(f": saved {saved}")
    elif isinstance(error, dict) and status != "succeeded":
        line += Text(f": {error.get('code')}: {error.get('message')}")
    elif status == "succeeded" and job.get("result") is not None:
        line += Text(f": {json.dumps(job['result'], separators=(', ', ': '))}")
    return line
