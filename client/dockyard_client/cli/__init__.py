"""The `dockyard` command line (click + rich) over the SDK.

`main()` is the console script. Commands live one family per module; `root.py` holds the
group, the shared State and the mapping of API errors to exit code 3. Exit codes
(exits.py): 0 succeeded, 1 a job or deploy failed, 2 usage error, 3 API or connection
error, 130 interrupted. Shell completion is click's: `_DOCKYARD_COMPLETE=bash_source dockyard`.
"""

from __future__ import annotations

import os
import sys

import click

from dockyard_client.cli import admin, apps, auth, deploy, jobs, processors, run, schedules
from dockyard_client.cli import webhooks as webhook_commands
from dockyard_client.cli.exits import INTERRUPTED
from dockyard_client.cli.root import cli

__all__ = ["cli", "invoke", "main"]

for command in (
    auth.register,
    auth.login,
    auth.logout,
    auth.whoami,
    processors.processors,
    run.run,
    jobs.jobs,
    deploy.deploy,
    apps.apps,
    schedules.schedules,
    webhook_commands.webhooks,
    admin.admin,
):
    cli.add_command(command)


def invoke(argv: list[str] | None = None) -> int:
    """Run `dockyard` with these arguments (default: the process's) and return its exit
    code; tests call it in-process."""
    try:
        code = cli.main(args=argv, prog_name="dockyard", standalone_mode=False)
    except click.exceptions.Abort:  # Ctrl-C (or end of input) at a prompt or elsewhere
        return INTERRUPTED
    except click.ClickException as error:  # usage errors exit 2, refusals too
        error.show()
        return error.exit_code
    except BrokenPipeError:  # `dockyard jobs ls | head -1`: the reader left, not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code if isinstance(code, int) else 0


def main() -> None:
    """The `dockyard` console script."""
    sys.exit(invoke())
