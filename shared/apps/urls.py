"""Where an app answers: its hostname on the deploy domain and its URL through the reverse
proxy. One place, because the deploy worker routes the hostname (workers/deploy/proxy.py)
and the API shows the URL (`url` of apps and deployments): the two must never disagree.
"""

from __future__ import annotations

from shared.config import Settings


def host_for(app: str, settings: Settings) -> str:
    """The hostname the proxy routes to `app`: `<app>.<DEPLOY_DOMAIN>`."""
    return f"{app}.{settings.deploy_domain}"


def app_url(app: str, settings: Settings) -> str:
    """The app's stable URL: `http://<host>:<PROXY_PORT>/` (no port when it is 80), or
    `https://<host>/` with PROXY_HTTPS (Caddy serves HTTPS on 443)."""
    host = host_for(app, settings)
    if settings.proxy_https:
        return f"https://{host}/"
    port = "" if settings.proxy_port == 80 else f":{settings.proxy_port}"
    return f"http://{host}{port}/"
