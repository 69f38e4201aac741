"""The Caddy configuration the deploy workers load: routes sorted by app, stopped apps 503 and
unknown hostnames 404 with short plain pages, the admin address from PROXY_ADMIN_URL, the
HTTPS variant, and the start configuration `make run` uses in step with the code."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from shared.apps.urls import app_url, host_for
from shared.config import Settings
from workers.deploy.proxy import NOT_FOUND_BODY, Route, caddy_config

ROOT = Path(__file__).resolve().parents[2]
BASE = Settings()


def _server(config: dict) -> dict:
    return config["apps"]["http"]["servers"]["apps"]


def test_routes_are_sorted_by_app_and_end_with_the_catch_all_404() -> None:
    routes = [Route("zeta", "10.0.0.2:4001"), Route("alpha", None), Route("mid", "h:4000")]
    config = caddy_config(routes, BASE)
    assert caddy_config(list(reversed(routes)), BASE) == config
    server = _server(config)
    assert server["listen"] == [":8080"] and server["automatic_https"] == {"disable": True}
    ids = [route.get("@id") for route in server["routes"]]
    assert ids == ["app-alpha", "app-mid", "app-zeta", None]
    zeta = server["routes"][2]
    assert zeta["match"] == [{"host": ["zeta.localhost"]}] and zeta["terminal"] is True
    assert zeta["handle"] == [
        {"handler": "reverse_proxy", "upstreams": [{"dial": "10.0.0.2:4001"}]}
    ]
    catch_all = server["routes"][-1]
    assert "match" not in catch_all and catch_all["terminal"] is True
    assert catch_all["handle"][0] == {
        "handler": "static_response",
        "status_code": 404,
        "headers": {"Content-Type": ["text/plain; charset=utf-8"]},
        "body": NOT_FOUND_BODY,
    }


def test_a_stopped_app_answers_503_naming_it() -> None:
    (stopped, _) = _server(caddy_config([Route("sleepy", None)], BASE))["routes"]
    assert stopped["match"] == [{"host": ["sleepy.localhost"]}]
    handler = stopped["handle"][0]
    assert (handler["handler"], handler["status_code"]) == ("static_response", 503)
    assert "sleepy" in handler["body"] and len(handler["body"]) < 100
    assert handler["headers"] == {"Content-Type": ["text/plain; charset=utf-8"]}


def test_admin_listen_comes_from_proxy_admin_url_and_is_not_persisted() -> None:
    assert caddy_config([], BASE)["admin"] == {
        "listen": "127.0.0.1:2019",
        "config": {"persist": False},
    }
    for url, listen in [
        ("http://127.0.0.1:2999/", "127.0.0.1:2999"),
        ("http://proxy:2019", "proxy:2019"),
        ("http://[::1]:2019", "[::1]:2019"),
        ("http://localhost", "localhost:80"),
    ]:
        settings = replace(BASE, proxy_admin_url=url)
        assert caddy_config([], settings)["admin"]["listen"] == listen, url


def test_https_listens_on_443_with_automatic_https() -> None:
    settings = replace(BASE, proxy_https=True, deploy_domain="apps.example.com")
    server = _server(caddy_config([Route("hello", "127.0.0.1:4000")], settings))
    assert server["listen"] == [":443"] and "automatic_https" not in server
    assert server["routes"][0]["match"] == [{"host": ["hello.apps.example.com"]}]
    assert app_url("hello", settings) == "https://hello.apps.example.com/"


def test_app_urls() -> None:
    assert host_for("hello", BASE) == "hello.localhost"
    assert app_url("hello", BASE) == "http://hello.localhost:8080/"
    assert app_url("hello", replace(BASE, proxy_port=80, deploy_domain="a.test")) == (
        "http://hello.a.test/"
    )


def test_the_shipped_start_config_is_what_the_code_prints() -> None:
    """deploy/proxy/caddy.json is `python -m workers.deploy.proxy --print-config` with the
    default settings (what `make run` generates when nothing is overridden)."""
    shipped = json.loads((ROOT / "deploy" / "proxy" / "caddy.json").read_text())
    assert shipped == caddy_config([], BASE)
    printed = subprocess.run(
        [sys.executable, "-m", "workers.deploy.proxy", "--print-config"],
        cwd=ROOT,
        env={"DOCKYARD_ENV": "development", "PROXY_PORT": "8181"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(printed.stdout) == caddy_config([], replace(BASE, proxy_port=8181))
