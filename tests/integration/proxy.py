"""A real Caddy for tests (Debian's `caddy`): `caddy run` on two free loopback ports (apps
and admin API), started with the configuration `make run` starts it with (no apps, the
catch-all 404), and tiny HTTP servers to route to.

    with caddy_proxy(tmp_path) as proxy, text_server("old") as upstream:
        settings = proxy.settings(base_settings)
        apply([Route("hello", upstream)], settings)
        assert proxy.get("hello").text == "old"

Python's resolver here does not map `*.localhost` to the loopback address (curl and browsers
do), so requests go to 127.0.0.1 with the app's `Host` header.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from shared.apps.urls import host_for
from shared.config import Settings
from tests.helpers import free_port, wait_for
from workers.deploy.proxy import caddy_config

CADDY = shutil.which("caddy")


class CaddyProxy:
    """One Caddy process of a test's own (its config, data and log under `workdir`)."""

    def __init__(self, workdir: Path) -> None:
        assert CADDY, "Debian's caddy is not installed (scripts/setup.sh installs it)"
        self.workdir = workdir
        self.http_port = free_port()
        self.admin_url = f"http://127.0.0.1:{free_port()}"
        self.config = workdir / "caddy.json"
        self.config.write_text(json.dumps(caddy_config([], self.settings(Settings()))))
        self.log = workdir / "caddy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def settings(self, base: Settings) -> Settings:
        """`base` pointed at this proxy (plain HTTP on its port, apps on *.localhost)."""
        return replace(
            base,
            proxy_port=self.http_port,
            proxy_admin_url=self.admin_url,
            deploy_domain="localhost",
            proxy_https=False,
        )

    def get(
        self, app: str, path: str = "/", session: requests.Session | None = None, **kwargs: Any
    ) -> requests.Response:
        """GET `path` of `app` through the proxy, as a browser opening the app's URL would
        (on `session`'s kept-alive connections if given, else on a connection of its own)."""
        host = f"{host_for(app, self.settings(Settings()))}:{self.http_port}"
        headers = {"Host": host, **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 5)
        url = f"http://127.0.0.1:{self.http_port}{path}"
        return (session or requests).get(url, headers=headers, **kwargs)

    def admin_answers(self) -> bool:
        try:
            return requests.get(f"{self.admin_url}/config/", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def start(self) -> None:
        home = self.workdir / "caddy-home"  # autosave, certificates: never the user's
        env = {**os.environ, "XDG_CONFIG_HOME": str(home), "XDG_DATA_HOME": str(home)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(CADDY), "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        process = self.process
        wait_for(
            lambda: process.poll() is not None or self.admin_answers(),
            timeout=20,
            message="caddy's admin API",
        )
        assert process.poll() is None, f"caddy exited:\n{self.log.read_text()[-3000:]}"

    def stop(self) -> None:
        """Kill it (no graceful stop: a crashed proxy is what restart tests need)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """Kill Caddy and start it again with the start configuration: every route gone."""
        self.stop()
        self.start()


@contextmanager
def caddy_proxy(tmp_path: Path) -> Iterator[CaddyProxy]:
    workdir = tmp_path / "caddy"
    workdir.mkdir(exist_ok=True)
    proxy = CaddyProxy(workdir)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@contextmanager
def text_server(body: str) -> Iterator[str]:
    """A threaded HTTP/1.1 server answering every GET with `body` (text/plain, keep-alive);
    yields its upstream address "127.0.0.1:port"."""
    payload = body.encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: tests send hundreds of requests."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
