"""What every command shares: the two consoles (stdout for results, stderr for progress,
prompts and errors), the API URL and the SDK client built from the saved login or
`DOCKYARD_TOKEN`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click
from rich.console import Console

from dockyard_client import credentials
from dockyard_client.client import Client

DEFAULT_API_URL = "http://127.0.0.1:8000"
TOKEN_ENV = "DOCKYARD_TOKEN"  # noqa: S105 (the variable's name, not a token)
#: Tables written to a pipe or a file are not cut to 80 columns (rich's default there).
PIPE_WIDTH = 200

F = TypeVar("F", bound=Callable[..., Any])


def make_console(*, stderr: bool) -> Console:
    """Colour only on a terminal (rich's own detection), never with NO_COLOR set."""
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty() and "COLUMNS" not in os.environ:
        width = PIPE_WIDTH
    return Console(
        file=stream,
        no_color=bool(os.environ.get("NO_COLOR")),
        highlight=False,
        width=width,
        soft_wrap=True,  # a long line is the terminal's to wrap: copied, it stays one line
    )


def same_api(left: str, right: str) -> bool:
    """Whether two API URLs name the same server (a saved token is sent only to its own)."""

    def norm(url: str) -> str:
        url = url.rstrip("/")
        return url.removesuffix("/api/v1").rstrip("/").lower()

    return norm(left) == norm(right)


class State:
    """Built once per invocation by the root group; commands get it with `pass_state`."""

    def __init__(self, api_url: str | None) -> None:
        self.out = make_console(stderr=False)
        self.err = make_console(stderr=True)
        self._api_url_option = api_url
        self._saved = credentials.load()
        self._client: Client | None = None

    @property
    def api_url(self) -> str:
        """--api-url / DOCKYARD_API_URL, else the saved login's, else the local default."""
        if self._api_url_option:
            return self._api_url_option
        if self._saved is not None:
            return self._saved.api_url
        return DEFAULT_API_URL

    @property
    def saved(self) -> credentials.Credentials | None:
        """The saved login if it belongs to the API this run talks to."""
        if self._saved is not None and same_api(self._saved.api_url, self.api_url):
            return self._saved
        return None

    def client(self) -> Client:
        """The SDK client: DOCKYARD_TOKEN wins; else the saved login, whose refreshed tokens
        are written back so the next run starts from them."""
        if self._client is None:
            token = os.environ.get(TOKEN_ENV)
            saved = self.saved
            if token:
                self._client = Client(self.api_url, token)
            elif saved is not None:
                self._client = SharedLoginClient(
                    self.api_url,
                    saved.access_token,
                    refresh_token=saved.refresh_token,
                    on_tokens=self._save_tokens,
                )
            else:
                self._client = Client(self.api_url)
        return self._client

    def anonymous_client(self) -> Client:
        """A client without any token (register, login)."""
        if self._client is not None:
            self._client.close()
        self._client = Client(self.api_url)
        return self._client

    def _save_tokens(self, access_token: str, refresh_token: str | None) -> None:
        saved = self._saved
        email = saved.email if saved is not None else None
        self._saved = credentials.Credentials(self.api_url, access_token, refresh_token, email)
        credentials.save(self._saved)

    def remember(self, access_token: str, refresh_token: str | None, email: str) -> None:
        """Save a fresh login for this API."""
        self._saved = credentials.Credentials(self.api_url, access_token, refresh_token, email)
        credentials.save(self._saved)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class SharedLoginClient(Client):
    """The SDK client for a saved login, which every `dockyard` command running at the same
    time shares through the credentials file. A refresh happens under the file's lock and,
    when another command has refreshed meanwhile, adopts its tokens instead of spending the
    same refresh token again (the API takes a second spend for a theft and ends the login).
    """

    def refresh(self) -> dict[str, Any]:
        with credentials.locked():
            current = credentials.load()
            if (
                current is not None
                and current.refresh_token
                and current.refresh_token != self.refresh_token
                and same_api(current.api_url, self.base_url)
            ):
                self.token, self.refresh_token = current.access_token, current.refresh_token
                return {"access_token": self.token, "refresh_token": self.refresh_token}
            return super().refresh()  # on_tokens saves the new pair, still under the lock


def pass_state(function: F) -> F:
    """click.pass_obj, typed for State."""
    return cast(F, click.pass_obj(function))
