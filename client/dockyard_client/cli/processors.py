"""`dockyard processors`: the catalogue of what can be run."""

from __future__ import annotations

from typing import Any

import click

from dockyard_client.cli.output import JSON_OPTION, emit_json, table
from dockyard_client.cli.state import State, pass_state


def _param_names(processor: dict[str, Any]) -> str:
    """The parameters from the processor's JSON Schema, required ones marked with `*`."""
    schema = processor.get("params") or {}
    required = set(schema.get("required") or [])
    names = schema.get("properties") or {}
    return ", ".join(f"{name}*" if name in required else name for name in names)


@click.command()
@JSON_OPTION
@pass_state
def processors(state: State, as_json: bool) -> None:
    """List the processors: name, kind, input, parameters (* = required)."""
    items = state.client().processors()
    if as_json:
        emit_json(items)
        return
    table(
        state.out,
        ["NAME", "KIND", "INPUT", "PARAMS", "DESCRIPTION"],
        (
            [p.get("name"), p.get("kind"), p.get("input"), _param_names(p), p.get("description")]
            for p in items
        ),
    )
