"""Printing results: `--json` writes one JSON document to stdout and nothing else; the human
form is a rich table or `key: value` lines. Shared formatting of times, sizes and values."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Every read command's `--json`.
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")


def emit_json(document: Any) -> None:
    """One JSON document on stdout (never rich: no colour, no wrapping)."""
    click.echo(json.dumps(document, indent=2, default=str))


def when(value: Any) -> str:
    """An API timestamp in local time, to the second (`2026-11-26 22:08:28`); '' for none."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def size(value: Any) -> str:
    """Bytes in a human unit."""
    if value is None:
        return ""
    amount = float(value)
    if amount < 1024:
        return f"{amount:.0f} B"
    for unit in ("KB", "MB"):
        amount /= 1024
        if amount < 1024:
            return f"{amount:.1f} {unit}"
    return f"{amount / 1024:.1f} GB"


def plain(value: Any) -> str:
    """A value for a table cell: text as is, None empty, the rest as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict) and not value:
        return ""
    return json.dumps(value, separators=(",", ":"))


def pairs_text(values: dict[str, Any] | None) -> str:
    """Labels and the like as `k=v,k2=v2`."""
    return ",".join(f"{key}={val}" for key, val in (values or {}).items())


def table(console: Console, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """A borderless table with a header; returns how many rows it printed."""
    grid = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        # Ids and names are never folded: a copied id must stay whole.
        grid.add_column(column, no_wrap=column in ("ID", "NAME", "JOB"), overflow="fold")
    count = 0
    for row in rows:
        grid.add_row(*(Text(plain(cell)) for cell in row))
        count += 1
    console.print(grid)
    return count


def fields(console: Console, items: Iterable[tuple[str, Any]]) -> None:
    """`key: value` lines for one object (show commands)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in items:
        grid.add_row(key, Text(plain(value)))
    console.print(grid)
