"""`dockyard webhooks ...`: notifications of job and deployment events to your URL."""

from __future__ import annotations

import itertools
from typing import Any

import click
from rich.text import Text

from dockyard_client.cli import parsing
from dockyard_client.cli.output import JSON_OPTION, emit_json, fields, pairs_text, table, when
from dockyard_client.cli.state import State, pass_state


@click.group()
def webhooks() -> None:
    """Webhooks: signed POSTs to your URL when your jobs and deployments change."""


def _rows(items: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            w["id"],
            w.get("url"),
            ",".join(w.get("events") or []),
            w.get("enabled"),
            w.get("disabled_reason"),
            when(w.get("last_success_at")),
        ]
        for w in items
    ]


@webhooks.command("ls")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@JSON_OPTION
@pass_state
def list_webhooks(state: State, limit: int, as_json: bool) -> None:
    """Your webhooks (an admin's: everyone's)."""
    items = list(itertools.islice(state.client().webhooks(), limit))
    if as_json:
        emit_json(items)
        return
    table(
        state.out,
        ["ID", "URL", "EVENTS", "ENABLED", "DISABLED BECAUSE", "LAST SUCCESS"],
        _rows(items),
    )


@webhooks.command("show")
@click.argument("webhook_id", metavar="ID")
@JSON_OPTION
@pass_state
def show(state: State, webhook_id: str, as_json: bool) -> None:
    """One webhook (never its secret)."""
    webhook = state.client().webhook(webhook_id)
    if as_json:
        emit_json(webhook)
        return
    fields(
        state.out,
        [
            ("id", webhook["id"]),
            ("url", webhook.get("url")),
            ("events", ", ".join(webhook.get("events") or [])),
            ("labels", pairs_text(webhook.get("labels")) or None),
            ("description", webhook.get("description")),
            ("enabled", webhook.get("enabled")),
            ("disabled because", webhook.get("disabled_reason")),
            ("failing since", when(webhook.get("failing_since"))),
            ("last success", when(webhook.get("last_success_at"))),
            ("created", when(webhook.get("created_at"))),
        ],
    )


@webhooks.command("create")
@click.argument("url")
@click.option(
    "--event", "-e", "events", multiple=True, metavar="EVENT", help="Repeatable; default: all."
)
@click.option("--label", "-l", multiple=True, metavar="KEY=VALUE", help="Only jobs with these.")
@click.option("--description")
@JSON_OPTION
@pass_state
def create(
    state: State,
    url: str,
    events: tuple[str, ...],
    label: tuple[str, ...],
    description: str | None,
    as_json: bool,
) -> None:
    """Subscribe URL; prints the signing secret, shown this once."""
    options: dict[str, Any] = {}
    if label:
        options["labels"] = parsing.labels(label)
    if description is not None:
        options["description"] = description
    webhook = state.client().create_webhook(url, list(events) or ["*"], **options)
    if as_json:
        emit_json(webhook)
        return
    state.out.print(f"webhook {webhook['id']} {webhook.get('url')}", highlight=False)
    state.out.print(Text(f"secret {webhook.get('secret')}"))
    state.err.print("(the secret is shown only now: keep it to verify deliveries)", style="dim")


@webhooks.command("delete")
@click.argument("webhook_id", metavar="ID")
@pass_state
def delete(state: State, webhook_id: str) -> None:
    """Delete a webhook."""
    state.client().delete_webhook(webhook_id)
    state.out.print(f"webhook {webhook_id} deleted", highlight=False)


@webhooks.command("ping")
@click.argument("webhook_id", metavar="ID")
@JSON_OPTION
@pass_state
def ping(state: State, webhook_id: str, as_json: bool) -> None:
    """Send a test delivery now."""
    delivery = state.client().ping_webhook(webhook_id)
    if as_json:
        emit_json(delivery)
        return
    state.out.print(f"ping delivery {delivery.get('id')} {delivery.get('status')}", highlight=False)
