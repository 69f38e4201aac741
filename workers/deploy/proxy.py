"""The reverse proxy's client: every app's hostname routed through Caddy, configured over
its admin API so routes change without a restart or a dropped connection.

The whole configuration is computed from the routes (`caddy_config`) and loaded at once
(`apply`): Caddy swaps configurations gracefully (listeners are kept, in-flight requests
finish on the old one), so one POST both switches an app to a new release atomically and
restores every route of a proxy that restarted empty. The same routes always give the same
configuration, so a caller can apply as often as it likes: an unchanged configuration is not
loaded again. No database here: the caller decides the routes.

`python -m workers.deploy.proxy --print-config` prints the start configuration for the
current settings (no apps: every hostname answers the catch-all 404); `make run` starts
Caddy with it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from shared.apps.urls import host_for
from shared.config import Settings, load_settings

SERVER = "apps"
NOT_FOUND_BODY = "No app is served at this address.\n"


class ProxyUnavailable(Exception):
    """The admin API could not be reached, or refused the configuration (Caddy's message)."""


@dataclass(frozen=True)
class Route:
    """One app's route: `upstream` is "host:port" of its serving release, or None for an app
    that exists but runs nothing (the proxy answers 503 naming it)."""

    app: str
    upstream: str | None


def caddy_config(routes: Iterable[Route], settings: Settings) -> dict[str, Any]:
    """Caddy's whole JSON configuration for these routes, sorted by app name.

    Plain HTTP (default): one server on :PROXY_PORT with automatic HTTPS off (otherwise Caddy
    treats every routed hostname as an HTTPS site and answers plain requests 400).
    PROXY_HTTPS: the server listens on :443 with Caddy's automatic HTTPS on, so Caddy gets a
    certificate for every app hostname (ACME; the hostnames must resolve to this machine) and
    adds its own :80 server that redirects to HTTPS and answers the HTTP challenges.
    """
    server: dict[str, Any] = {
        "listen": [":443"] if settings.proxy_https else [f":{settings.proxy_port}"],
        "routes": [
            *(_app_route(route, settings) for route in sorted(routes, key=lambda r: r.app)),
            _response(404, NOT_FOUND_BODY),
        ],
    }
    if not settings.proxy_https:
        server["automatic_https"] = {"disable": True}
    return {
        # Not persisted: the routes are rebuilt from the database, never resumed from disk.
        "admin": {"listen": _admin_listen(settings), "config": {"persist": False}},
        "apps": {"http": {"servers": {SERVER: server}}},
    }


def apply(routes: Iterable[Route], settings: Settings, timeout: float = 5.0) -> bool:
    """Make the proxy serve exactly these routes; True if a new configuration was loaded,
    False if it already served them. Raises ProxyUnavailable.

    The running `admin` section is kept as it is: the proxy owns where its admin endpoint
    listens (in the compose stack it listens on :2019 while workers reach it as proxy:2019),
    and moving it from here would cut the connection this call runs on."""
    base = settings.proxy_admin_url.rstrip("/")
    wanted = caddy_config(routes, settings)
    try:
        running = requests.get(f"{base}/config/", timeout=timeout)
        running.raise_for_status()
        current = running.json()
        if isinstance(current, dict) and "admin" in current:
            wanted["admin"] = current["admin"]
        if current == wanted:
            return False
        loaded = requests.post(f"{base}/load", json=wanted, timeout=timeout)
    except (requests.RequestException, ValueError) as error:
        raise ProxyUnavailable(f"proxy admin API at {base}: {error}") from error
    if loaded.status_code >= 300:
        raise ProxyUnavailable(f"the proxy refused the configuration: {_caddy_error(loaded)}")
    return True


def _app_route(route: Route, settings: Settings) -> dict[str, Any]:
    if route.upstream is None:
        handle = _response(503, f"The app {route.app} is stopped.\n")["handle"]
    else:
        handle = [{"handler": "reverse_proxy", "upstreams": [{"dial": route.upstream}]}]
    return {
        "@id": f"app-{route.app}",
        "match": [{"host": [host_for(route.app, settings)]}],
        "handle": handle,
        "terminal": True,
    }


def _response(status: int, body: str) -> dict[str, Any]:
    """A route answering every request it sees with a short plain-text page."""
    headers = {"Content-Type": ["text/plain; charset=utf-8"]}
    handler = {"handler": "static_response", "status_code": status, "headers": headers}
    return {"handle": [{**handler, "body": body}], "terminal": True}


def _admin_listen(settings: Settings) -> str:
    """host:port of PROXY_ADMIN_URL (Caddy's admin `listen` address)."""
    parts = urlsplit(settings.proxy_admin_url)
    host = parts.hostname or "localhost"
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    return f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _caddy_error(response: requests.Response) -> str:
    """Caddy answers errors as {"error": "..."}; anything else is shown as it came."""
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:500]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--print-config",
        action="store_true",
        required=True,
        help="print the start configuration (no apps) for the current settings",
    )
    parser.parse_args()
    print(json.dumps(caddy_config([], load_settings()), indent=2))


if __name__ == "__main__":
    main()
