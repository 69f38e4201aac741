"""`dockyard apps ...`: apps, their releases, rollback, stop and delete."""

from __future__ import annotations

import sys
from typing import Any

import click

from dockyard_client.cli import exits
from dockyard_client.cli.deploy import deployment_of, follow_deployment, report_deploy_job
from dockyard_client.cli.exits import Refusal
from dockyard_client.cli.output import JSON_OPTION, emit_json, fields, table, when
from dockyard_client.cli.state import State, pass_state


@click.group()
def apps() -> None:
    """Apps: the stable name and URL each deploy is a release of."""


def _release(app: dict[str, Any]) -> str:
    return f"v{app['current_release']}" if app.get("current_release") else ""


@apps.command("ls")
@JSON_OPTION
@pass_state
def list_apps(state: State, as_json: bool) -> None:
    """Your apps (an admin's: everyone's), newest first."""
    items = list(state.client().apps())
    if as_json:
        emit_json(items)
        return
    table(
        state.out,
        ["NAME", "STATUS", "RELEASE", "URL", "REPOSITORY", "CREATED"],
        (
            [
                a["name"],
                a.get("status"),
                _release(a),
                a.get("url"),
                a.get("repo_url"),
                when(a.get("created_at")),
            ]
            for a in items
        ),
    )


def _release_rows(releases: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            r.get("version") or f"v{r.get('release')}",
            r.get("status"),
            (r.get("commit") or "")[:12],
            f"v{r['rollback_of']}" if r.get("rollback_of") else "",
            r.get("image_kept"),
            when(r.get("created_at")),
            r.get("deployment_id"),
        ]
        for r in releases
    ]


RELEASE_COLUMNS = ["RELEASE", "STATUS", "COMMIT", "ROLLBACK OF", "IMAGE KEPT", "CREATED", "ID"]


@apps.command("show")
@click.argument("name")
@JSON_OPTION
@pass_state
def show(state: State, name: str, as_json: bool) -> None:
    """One app and its latest releases."""
    app = state.client().app(name)
    if as_json:
        emit_json(app)
        return
    fields(
        state.out,
        [
            ("name", app["name"]),
            ("url", app.get("url")),
            ("status", app.get("status")),
            ("release", _release(app) or None),
            ("deployment", app.get("current_deployment")),
            ("repository", app.get("repo_url")),
            ("branch", app.get("branch")),
            ("auto deploy", app.get("auto_deploy")),
            ("health path", app.get("health_path")),
            ("container port", app.get("container_port")),
            ("env", ", ".join(app.get("env_names") or []) or None),
            ("releases", app.get("release_count")),
            ("created", when(app.get("created_at"))),
        ],
    )
    if app.get("releases"):
        state.out.print()
        table(state.out, RELEASE_COLUMNS, _release_rows(app["releases"]))


@apps.command("releases")
@click.argument("name")
@JSON_OPTION
@pass_state
def releases(state: State, name: str, as_json: bool) -> None:
    """Every release of the app, newest first."""
    items = list(state.client().releases(name))
    if as_json:
        emit_json(items)
        return
    table(state.out, RELEASE_COLUMNS, _release_rows(items))


@apps.command("rollback")
@click.argument("name")
@click.argument("release", type=click.IntRange(min=1))
@click.option("--follow", "-f", is_flag=True, help="Stream its log; end with the URL.")
@JSON_OPTION
@pass_state
def rollback(state: State, name: str, release: int, follow: bool, as_json: bool) -> None:
    """Run release RELEASE's kept image again as the app's next release (no build)."""
    job = state.client().rollback(name, release)
    if not follow:
        report_deploy_job(state, job, as_json=as_json)
        return
    follow_deployment(state, deployment_of(job), as_json=as_json)


@apps.command("stop")
@click.argument("name")
@JSON_OPTION
@pass_state
def stop(state: State, name: str, as_json: bool) -> None:
    """Stop the app's current deployment (the app then answers 503 until a deploy)."""
    client = state.client()
    current = client.app(name).get("current_deployment")
    if not current:
        state.err.print(f"app {name} has no current deployment: nothing to stop", highlight=False)
        return
    deployment = client.stop_deployment(str(current))
    if as_json:
        emit_json(deployment)
        return
    state.out.print(f"deployment {current} {deployment.get('status')}", highlight=False)


@apps.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@JSON_OPTION
@pass_state
def delete(state: State, name: str, yes: bool, as_json: bool) -> None:
    """Delete the app: its deployments stopped, its route and name freed."""
    if not yes:
        if not sys.stdin.isatty():
            raise Refusal(f"deleting app {name} needs --yes without a terminal to ask on")
        if not click.confirm(f"Delete app {name} and stop its deployments?", err=True):
            exits.leave(exits.FAILED)
    answer = state.client().delete_app(name)
    if as_json:
        emit_json(answer)
        return
    stopping = len(answer.get("stopping") or [])
    state.out.print(f"app {name} deleted ({stopping} deployment(s) stopping)", highlight=False)
