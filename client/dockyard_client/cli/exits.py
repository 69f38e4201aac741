"""Exit codes and how an API error is shown: one place, so every command agrees.

0 succeeded, 1 the job (or deploy) failed, died or was cancelled, 2 usage errors (click's
own, and refusals such as overwriting a file), 3 API or connection errors, 130 Ctrl-C.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any, NoReturn

import click
from rich.console import Console
from rich.text import Text

from dockyard_client.errors import APIConnectionError, AuthenticationError, DockyardError

OK = 0
FAILED = 1
USAGE = 2
API_ERROR = 3
INTERRUPTED = 130


def _detail_lines(details: Any, prefix: str = "") -> Iterator[str]:
    """`details` flattened to `path: problem` lines (422 field errors nest by field)."""
    if isinstance(details, dict):
        for key, value in details.items():
            # {"fields": {"params": {"seconds": [...]}}} reads best as params.seconds.
            name = prefix if key == "fields" and not prefix else f"{prefix}{key}"
            yield from _detail_lines(value, f"{name}." if name else "")
    elif isinstance(details, list) and all(isinstance(item, str) for item in details):
        yield f"{prefix.rstrip('.')}: {'; '.join(details)}"
    elif isinstance(details, str | int | float | bool) or details is None:
        yield f"{prefix.rstrip('.')}: {details}"
    else:
        yield f"{prefix.rstrip('.')}: {json.dumps(details)}"


def error_lines(error: DockyardError) -> list[str]:
    """`<code>: <message>`, then each detail, then the request id."""
    lines = [f"{error.code}: {error.message}"]
    lines += [f"  {line}" for line in _detail_lines(error.details or {})]
    if error.request_id:
        lines.append(f"  request id: {error.request_id}")
    return lines


def show_error(console: Console, error: DockyardError, *, api_url: str) -> None:
    """Print the error on stderr as `error: <code>: <message>` and its details."""
    first, *rest = error_lines(error)
    console.print(Text("error: ", style="bold red") + Text(first), highlight=False)
    for line in rest:
        console.print(Text(line), highlight=False)
    if isinstance(error, APIConnectionError):
        console.print(Text(f"  server: {api_url} (--api-url, DOCKYARD_API_URL)"), highlight=False)
    if isinstance(error, AuthenticationError) and error.code != "invalid_credentials":
        console.print(
            Text("hint: log in with `dockyard login` (or set DOCKYARD_TOKEN)"),
            style="dim",
            highlight=False,
        )


class Refusal(click.ClickException):
    """Something the command line will not do (overwrite a file, delete without --yes):
    `error: <message>` on stderr, exit 2 like any usage error."""

    exit_code = USAGE

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def leave(code: int) -> NoReturn:
    """End the command with this exit code (the root turns it into the process's)."""
    raise click.exceptions.Exit(code)
