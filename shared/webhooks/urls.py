"""Which webhook URLs Dockyard will call, and the addresses it may connect to.

Checked when a webhook is saved and again at every delivery, and the delivery connects to
the very address that was checked (no DNS-rebinding window between check and connect):
`https` only (unless WEBHOOK_ALLOW_HTTP), no credentials in the URL, and every address the
host resolves to must be public: not loopback, private, link-local (the cloud metadata
address 169.254.169.254 included), multicast, reserved, unspecified, or their IPv6
equivalents (IPv4-mapped addresses are judged as the IPv4 they carry).
WEBHOOK_ALLOWED_NETWORKS opens chosen ranges (self-hosted receivers, tests).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(Exception):
    """The URL may not be called; `reason` says why (shown to the user)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class CheckedUrl:
    scheme: str
    host: str  # as written (the Host header and TLS server name)
    port: int
    target: str  # path and query
    addresses: tuple[str, ...]  # every address the host resolved to, all allowed


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _allowed(address: IPAddress, settings: Settings) -> bool:
    if _public(address):
        return True
    networks = (ipaddress.ip_network(network) for network in settings.webhook_allowed_networks)
    return any(network.version == address.version and address in network for network in networks)


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        raise UrlRefused(f"the host {host!r} does not resolve ({error})") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_url(url: str, settings: Settings) -> CheckedUrl:
    """The URL's parts and allowed addresses, or UrlRefused with the reason."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UrlRefused(f"not a valid URL ({error})") from None
    schemes = ("https", "http") if settings.webhook_allow_http else ("https",)
    if parts.scheme not in schemes:
        raise UrlRefused(f"the scheme must be {' or '.join(schemes)}")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("credentials in the URL are not allowed (the signature authenticates)")
    host = parts.hostname
    if not host:
        raise UrlRefused("the URL has no host")
    if port == 0:
        raise UrlRefused("port 0 is not a port a receiver listens on")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = _resolve(host, port)
    refused = [str(a) for a in addresses if not _allowed(a, settings)]
    if not addresses or refused:
        raise UrlRefused(
            f"{host} resolves to a non-public address ({', '.join(refused) or 'none'}); "
            "only public addresses are called unless WEBHOOK_ALLOWED_NETWORKS allows them"
        )
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return CheckedUrl(parts.scheme, host, port, target, tuple(str(a) for a in addresses))
