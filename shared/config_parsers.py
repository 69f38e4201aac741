"""How one environment variable's text becomes a setting's value, and how the docs say so.

Each parser carries the words docs/configuration.md shows for it (its type and bounds) and
how a value is written back as environment text, so that the page is generated from the
very objects that validate the values and cannot drift from them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlparse

T = TypeVar("T")


class ConfigError(SystemExit):
    """Raised for a missing or malformed setting; exits with one clear line."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        super().__init__(f"configuration error: {variable} {problem}")


def number_text(value: float) -> str:
    """A number as an operator writes it: `2` rather than `2.0`."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def _joined(values: tuple[object, ...]) -> str:
    return ",".join(str(value) for value in values)


@dataclass(frozen=True)
class Parser(Generic[T]):
    """Turns `raw` text into a value or raises ConfigError naming the variable.

    `kind` and `bounds` are what the configuration page shows; `show` writes a value back as
    the text that would produce it (the page's default column, and a round-trip test)."""

    kind: str
    bounds: str
    parse: Callable[[str, str], T]
    show: Callable[[T], str] = str

    def __call__(self, name: str, raw: str) -> T:
        return self.parse(name, raw)


def integer(minimum: int = 0, maximum: int | None = None) -> Parser[int]:
    bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"

    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"must be an integer, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise ConfigError(name, f"must be {bounds}, got {value}")
        return value

    return Parser("integer", bounds, parse)


def number(minimum: float = 0.0, maximum: float | None = None) -> Parser[float]:
    """A float; with a maximum the message names both ends (RETRY_JITTER: 0 to 1)."""
    if maximum is None:
        bounds = f">= {number_text(minimum)}"
    else:
        bounds = f"between {number_text(minimum)} and {number_text(maximum)}"

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"must be a number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(name, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(name, f"must be {bounds}")
        return value

    return Parser("number", bounds, parse, number_text)


def url(*schemes: str) -> Parser[str]:
    def parse(name: str, raw: str) -> str:
        parsed = urlparse(raw)
        if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
            raise ConfigError(name, f"must be a URL with scheme {' or '.join(schemes)}")
        return raw

    return Parser("URL", "scheme " + " or ".join(f"`{s}`" for s in schemes), parse)


def choice(*choices: str) -> Parser[str]:
    def parse(name: str, raw: str) -> str:
        if raw not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    return Parser("choice", ", ".join(f"`{c}`" for c in choices), parse)


def _nonblank(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigError(name, "must not be empty")
    return raw


TEXT = Parser("text", "", _nonblank)
# Taken as given, blanks included (METRICS_TOKEN: any token the scraper sends).
ANY_TEXT = Parser("text", "", lambda _name, raw: raw)


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(name, f"must be true or false, got {raw!r}")


BOOLEAN = Parser(
    "boolean",
    "`true`/`false` (also 1/0, yes/no, on/off)",
    _bool,
    lambda value: "true" if value else "false",
)


def _seconds_list(name: str, raw: str) -> tuple[float, ...]:
    """Comma-separated non-negative seconds, at least one (a backoff schedule)."""
    try:
        values = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(name, f"must be comma-separated seconds, got {raw!r}") from None
    if not values or any(value < 0 for value in values):
        raise ConfigError(name, f"must be comma-separated seconds >= 0, got {raw!r}")
    return values


SECONDS_LIST = Parser(
    "list of seconds",
    "at least one, each >= 0",
    _seconds_list,
    lambda values: ",".join(number_text(v) for v in values),
)


def _hosts(name: str, raw: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    if not hosts or any(not re.fullmatch(r"[a-z0-9.-]+", h) for h in hosts):
        raise ConfigError(name, f"must be a comma-separated list of host names, got {raw!r}")
    return hosts


HOSTS = Parser("list of host names", "at least one", _hosts, _joined)

_PROTOCOLS = ("https", "http", "file")


def _protocols(name: str, raw: str) -> str:
    """Stored the way git's GIT_ALLOW_PROTOCOL wants it: colon-separated."""
    protocols = [p.strip() for p in raw.split(",") if p.strip()]
    if not protocols or not set(protocols) <= set(_PROTOCOLS):
        raise ConfigError(name, f"must list protocols among {sorted(_PROTOCOLS)}, got {raw!r}")
    return ":".join(protocols)


PROTOCOLS = Parser(
    "list of protocols",
    ", ".join(f"`{p}`" for p in _PROTOCOLS),
    _protocols,
    lambda value: value.replace(":", ","),
)


def _port_range(name: str, raw: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", raw)
    if not match:
        raise ConfigError(name, f"must look like 20000-20999, got {raw!r}")
    low, high = int(match.group(1)), int(match.group(2))
    if not 1024 <= low <= high <= 65535:
        raise ConfigError(name, "must be a range within 1024-65535")
    return low, high


PORT_RANGE = Parser(
    "port range", "within 1024-65535", _port_range, lambda ports: f"{ports[0]}-{ports[1]}"
)


def _ipv4_networks(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated IPv4 networks; `none` for an empty list."""
    if raw.strip().lower() == "none":
        return ()
    try:
        return tuple(
            str(ipaddress.IPv4Network(part.strip(), strict=False))
            for part in raw.split(",")
            if part.strip()
        )
    except ValueError:
        raise ConfigError(
            name, f"must list IPv4 networks (10.0.0.0/8,...) or none, got {raw!r}"
        ) from None


IPV4_NETWORKS = Parser(
    "list of IPv4 networks",
    "`none` for an empty list",
    _ipv4_networks,
    lambda networks: _joined(networks) or "none",
)


def _ip_networks(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated IPv4 or IPv6 networks; empty or `none` for none."""
    if raw.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(
            str(ipaddress.ip_network(part.strip(), strict=False))
            for part in raw.split(",")
            if part.strip()
        )
    except ValueError:
        raise ConfigError(
            name, f"must list IP networks (10.0.0.0/8,fd00::/8,...), got {raw!r}"
        ) from None


IP_NETWORKS = Parser(
    "list of IP networks", "IPv4 or IPv6; `none` for an empty list", _ip_networks, _joined
)
