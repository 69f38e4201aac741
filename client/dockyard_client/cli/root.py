"""The `dockyard` group: its global option, the State every command shares, and the one
place an API error becomes `error: <code>: <message>` on stderr and exit code 3."""

from __future__ import annotations

from typing import Any

import click

from dockyard_client.cli import exits
from dockyard_client.cli.state import DEFAULT_API_URL, State
from dockyard_client.errors import DockyardError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class RootGroup(click.Group):
    """Maps SDK errors raised anywhere below to the command line's exit code 3."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DockyardError as error:
            state: State = ctx.obj
            exits.show_error(state.err, error, api_url=state.api_url)
            ctx.exit(exits.API_ERROR)


@click.group(cls=RootGroup, context_settings=CONTEXT)
@click.option(
    "--api-url",
    envvar="DOCKYARD_API_URL",
    metavar="URL",
    help=f"The Dockyard server (env DOCKYARD_API_URL; default: the saved login's, "
    f"else {DEFAULT_API_URL}).",
)
@click.version_option(package_name="dockyard-client", prog_name="dockyard")
@click.pass_context
def cli(ctx: click.Context, api_url: str | None) -> None:
    """Dockyard from the command line: run jobs, deploy apps, operate the platform.

    Results go to stdout (a table, or one JSON document with --json); progress, prompts and
    errors to stderr. Exit codes: 0 succeeded, 1 the job or deploy failed, 2 usage error,
    3 API or connection error, 130 interrupted.
    """
    state = State(api_url)
    ctx.obj = state
    ctx.call_on_close(state.close)
