"""`dockyard deploy`: deploy a repository as an app's next release and, with --follow,
stream its build log live until it is serving (its URL) or has failed (exit 1)."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from dockyard_client.cli import exits, parsing
from dockyard_client.cli.output import JSON_OPTION, emit_json
from dockyard_client.cli.state import State, pass_state


def deployment_of(job: dict[str, Any]) -> str:
    """The deployment a deploy job makes (named in its params)."""
    return str((job.get("params") or {})["deployment_id"])


def follow_deployment(state: State, deployment_id: str, *, as_json: bool) -> None:
    """Print the build log as it is written (stdout; stderr with --json), then the URL;
    exit 1 unless the deployment became healthy, 130 on Ctrl-C (the deploy goes on)."""
    client = state.client()
    log = state.err if as_json else state.out
    outcome: dict[str, Any] | None = None
    try:
        for line in client.follow_build(deployment_id):
            event = line.get("event")
            data = line.get("data") or {}
            text = str(data.get("text") or "")
            if event == "outcome":  # the SDK decodes its JSON text into data["outcome"]
                outcome = dict(data.get("outcome") or {"status": text})
            elif event == "step":
                log.print(Text(f"==> {text}", style="bold"))
            else:
                log.print(Text(text.rstrip("\n")))
    except KeyboardInterrupt:
        state.err.print(
            f"stopped following; the deploy goes on (deployment {deployment_id})",
            highlight=False,
        )
        exits.leave(exits.INTERRUPTED)
    deployment = client.deployment(deployment_id)
    if outcome is None:  # the stream ended without one: the deployment says how it went
        outcome = {"status": deployment.get("status"), "url": deployment.get("url")}
        outcome["error"] = deployment.get("error")
    healthy = outcome.get("status") == "healthy"
    if as_json:
        emit_json(deployment)
    elif healthy:
        url = outcome.get("url") or deployment.get("url")
        state.out.print(Text("healthy", style="green") + Text(f": {url}"))
    else:
        error = outcome.get("error") or {}
        detail = f": {error.get('code')}: {error.get('message')}" if error else ""
        state.out.print(Text(str(outcome.get("status")), style="red") + Text(detail))
    exits.leave(exits.OK if healthy else exits.FAILED)


def report_deploy_job(state: State, job: dict[str, Any], *, as_json: bool) -> None:
    """What a deploy or rollback submitted, without --follow."""
    if as_json:
        emit_json(job)
        return
    params = job.get("params") or {}
    state.out.print(
        f"job {job['id']} {job.get('status')}: app {params.get('app')}, "
        f"deployment {params.get('deployment_id')}",
        highlight=False,
    )


@click.command()
@click.argument("repo")
@click.option("--app", help="The app this deploy is a release of (created on first use).")
@click.option("--ref", help="Branch, tag or full commit id (default: the app's, else main).")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE", help="Environment (secret).")
@click.option("--health-path", metavar="PATH", help="Checked before traffic switches (/).")
@click.option("--port", type=click.IntRange(1, 65535), help="The port the container listens on.")
@click.option("--follow", "-f", is_flag=True, help="Stream the build log; end with the URL.")
@JSON_OPTION
@pass_state
def deploy(
    state: State,
    repo: str,
    app: str | None,
    ref: str | None,
    env: tuple[str, ...],
    health_path: str | None,
    port: int | None,
    follow: bool,
    as_json: bool,
) -> None:
    """Deploy the GitHub repository REPO (https URL) as an app's next release.

    With --follow: the clone, build and start output as it happens, then the app's URL;
    exit 0 once it is healthy, 1 if the deploy failed.
    """
    job = state.client().deploy(
        repo,
        app=app,
        ref=ref,
        env=parsing.env(env) or None,
        health_path=health_path,
        container_port=port,
    )
    if not follow:
        report_deploy_job(state, job, as_json=as_json)
        return
    follow_deployment(state, deployment_of(job), as_json=as_json)
