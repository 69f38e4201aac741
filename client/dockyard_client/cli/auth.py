"""`dockyard register`, `login`, `logout` and `whoami`: the saved login (credentials.py)."""

from __future__ import annotations

import sys

import click

from dockyard_client import credentials
from dockyard_client.cli.output import JSON_OPTION, emit_json, fields
from dockyard_client.cli.state import State, pass_state
from dockyard_client.client import Client

EMAIL_OPTION = click.option("--email", help="Your account's email (asked when left out).")
PASSWORD_STDIN_OPTION = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from stdin (first line) instead of asking for it.",
)


def _password(from_stdin: bool, *, confirm: bool = False) -> str:
    """From stdin's first line, or asked on the terminal without echo."""
    if not from_stdin:
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=confirm, err=True))
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.UsageError("--password-stdin: no password on stdin")
    return password


def _login(state: State, email: str, password: str) -> None:
    tokens = state.anonymous_client().login(email, password)
    state.remember(tokens["access_token"], tokens.get("refresh_token"), email)
    state.err.print(f"Logged in to {state.api_url} as {email}", highlight=False)


@click.command()
@EMAIL_OPTION
@PASSWORD_STDIN_OPTION
@pass_state
def login(state: State, email: str | None, password_stdin: bool) -> None:
    """Log in and save the tokens for the next commands.

    The password is asked without echo. The tokens are saved in
    $XDG_CONFIG_HOME/dockyard/credentials.json (~/.config/dockyard/...), mode 0600; an
    expired access token is refreshed by itself and the new tokens saved back.
    """
    if email is None:
        email = click.prompt("Email", err=True)
    _login(state, str(email), _password(password_stdin))


@click.command()
@EMAIL_OPTION
@PASSWORD_STDIN_OPTION
@pass_state
def register(state: State, email: str | None, password_stdin: bool) -> None:
    """Create an account (password: 8 characters or more, asked twice), then log in."""
    if email is None:
        email = click.prompt("Email", err=True)
    password = _password(password_stdin, confirm=True)
    state.anonymous_client().register(str(email), password)
    _login(state, str(email), password)


@click.command()
@pass_state
def logout(state: State) -> None:
    """End the saved login on the server (its tokens revoked) and delete the file.

    The file is deleted even when the server cannot be reached (exit 3 then says so).
    """
    saved = credentials.load()
    if saved is None:
        state.err.print("Not logged in.", highlight=False)
        return
    client = Client(saved.api_url, saved.access_token, refresh_token=saved.refresh_token)
    try:
        client.logout()
    finally:
        client.close()
        credentials.remove()
    state.err.print("Logged out.", highlight=False)


@click.command()
@JSON_OPTION
@pass_state
def whoami(state: State, as_json: bool) -> None:
    """Who the token belongs to."""
    me = state.client().whoami()
    if as_json:
        emit_json(me)
        return
    fields(state.out, [("email", me.get("email")), ("role", me.get("role")), ("id", me.get("id"))])
