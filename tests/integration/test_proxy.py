"""The reverse proxy client against a real Caddy (Debian's): routes applied through the admin
API answer at the app's hostname; unknown hostnames 404 and stopped apps 503 with short plain
pages; switching an app's upstream under a steady client drops no request and changes the
content exactly once; an unchanged configuration is not loaded again; a restarted (empty)
proxy is restored by applying again; an unreachable or refusing admin API is one error."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.config import Settings
from tests.helpers import free_port, wait_for
from tests.integration.proxy import CaddyProxy, caddy_proxy, text_server
from workers.deploy.proxy import NOT_FOUND_BODY, ProxyUnavailable, Route, apply

RATE = 20  # requests a second, per client
MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


@pytest.fixture()
def proxy(tmp_path: Path) -> Iterator[CaddyProxy]:
    with caddy_proxy(tmp_path) as running:
        yield running


@pytest.fixture()
def old() -> Iterator[str]:
    with text_server("old") as upstream:
        yield upstream


@pytest.fixture()
def new() -> Iterator[str]:
    with text_server("new") as upstream:
        yield upstream


def test_a_route_answers_at_the_apps_hostname(proxy: CaddyProxy, settings: Settings, old: str):
    assert apply([Route("hello", old)], proxy.settings(settings)) is True
    response = proxy.get("hello", "/some/path?q=1")
    assert (response.status_code, response.text) == (200, "old")


def test_unknown_host_404_and_stopped_app_503(proxy: CaddyProxy, settings: Settings, old: str):
    apply([Route("hello", old), Route("sleepy", None)], proxy.settings(settings))
    unknown = proxy.get("nobody")
    assert unknown.status_code == 404 and unknown.text == NOT_FOUND_BODY
    assert unknown.headers["Content-Type"].startswith("text/plain")
    stopped = proxy.get("sleepy")
    assert stopped.status_code == 503 and "sleepy" in stopped.text
    assert stopped.headers["Content-Type"].startswith("text/plain")
    assert len(stopped.text) < 100
    assert proxy.get("hello").text == "old"


def test_switching_the_upstream_drops_nothing_and_changes_once(
    proxy: CaddyProxy, settings: Settings, old: str, new: str
) -> None:
    """Two clients at 20 requests a second each, one opening a connection per request and one
    keeping its connection alive, for about a second before and after the switch.

    Caddy binds a new listening socket on every configuration load (SO_REUSEPORT) and closes
    the old one: only with net.ipv4.tcp_migrate_req=1 (scripts/setup.sh) are connections
    waiting in the old socket's queue handed to the new one rather than reset. It also closes
    the kept-alive connections that are idle at that moment; a request sent on one just then
    is retried once on a new connection, as browsers and curl do (RFC 9112, 9.3.1)."""
    assert MIGRATE_REQ.read_text().strip() == "1", f"run scripts/setup.sh: {MIGRATE_REQ} is 0"
    proxied = proxy.settings(settings)
    apply([Route("hello", old), Route("other", new)], proxied)
    clients = {"fresh": _Client(proxy, keep_alive=False), "keep-alive": _Client(proxy, True)}
    for client in clients.values():
        client.start()
    try:
        enough = RATE  # a second's worth each, before and after
        wait_for(lambda: all(len(c.seen) >= enough for c in clients.values()), timeout=10)
        assert apply([Route("hello", new), Route("other", new)], proxied) is True
        switched = {name: len(c.seen) for name, c in clients.items()}
        wait_for(
            lambda: all(len(c.seen) >= switched[n] + enough for n, c in clients.items()),
            timeout=10,
        )
    finally:
        for client in clients.values():
            client.stop()
    for name, client in clients.items():
        failed = [answer for answer in client.seen if answer not in ("old", "new")]
        assert failed == [], name
        changes = sum(a != b for a, b in zip(client.seen, client.seen[1:], strict=False))
        assert (client.seen[0], client.seen[-1], changes) == ("old", "new", 1), name
    assert clients["keep-alive"].retried <= 1  # at most the request sent as Caddy switched


def test_the_same_routes_are_not_loaded_twice(proxy: CaddyProxy, settings: Settings, old: str):
    proxied = proxy.settings(settings)
    routes = [Route("b-app", old), Route("a-app", None)]
    assert apply(routes, proxied) is True
    assert apply(list(reversed(routes)), proxied) is False
    assert apply([Route("b-app", old)], proxied) is True


def test_a_restarted_proxy_is_restored_by_applying_again(
    proxy: CaddyProxy, settings: Settings, old: str
) -> None:
    proxied = proxy.settings(settings)
    apply([Route("hello", old)], proxied)
    proxy.restart()
    assert proxy.get("hello").status_code == 404
    assert apply([Route("hello", old)], proxied) is True
    assert proxy.get("hello").text == "old"


def test_admin_api_down_or_refusing_is_proxy_unavailable(
    proxy: CaddyProxy, settings: Settings, old: str
) -> None:
    down = replace(proxy.settings(settings), proxy_admin_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProxyUnavailable, match="proxy admin API"):
        apply([Route("hello", old)], down, timeout=1)
    proxied = proxy.settings(settings)
    apply([Route("hello", old)], proxied)
    with socket.create_server(("127.0.0.1", 0)) as taken:  # a port Caddy cannot listen on
        busy = replace(proxied, proxy_port=taken.getsockname()[1])
        with pytest.raises(ProxyUnavailable, match="refused the configuration: .*in use"):
            apply([Route("hello", old)], busy)
    assert proxy.get("hello").text == "old"  # Caddy kept the configuration it had


class _Client(threading.Thread):
    """GETs the app every 1/RATE s until stopped; `seen` holds each body, or the error."""

    def __init__(self, proxy: CaddyProxy, keep_alive: bool) -> None:
        super().__init__(daemon=True)
        self.proxy = proxy
        self.session = requests.Session() if keep_alive else None
        if self.session is not None:  # a browser's one retry on a reused connection
            once = Retry(total=1, connect=1, read=1, status=0, other=0, allowed_methods={"GET"})
            self.session.mount("http://", HTTPAdapter(max_retries=once))
        self.seen: list[str] = []
        self.retried = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            try:
                if self.session is None:
                    response = self.proxy.get("hello", headers={"Connection": "close"})
                else:
                    response = self.proxy.get("hello", session=self.session)
                    self.retried += len(response.raw.retries.history)
                self.seen.append(response.text if response.ok else f"HTTP {response.status_code}")
            except requests.RequestException as error:
                self.seen.append(repr(error))
            next_at += 1 / RATE
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
