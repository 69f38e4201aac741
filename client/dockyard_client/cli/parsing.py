"""Turning command-line text into API values: `key=value` params and labels, durations
(`90s`, `5m`, `1h30m`) and times (`--at`). Pure functions, so the rules are unit-tested
without a server; each raises click.BadParameter (exit 2) with the reason."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import click

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def split_pair(text: str, what: str, separators: str = "=") -> tuple[str, str]:
    """`key=value` -> (key, value); the value may itself contain the separator."""
    positions = [text.find(sep) for sep in separators if sep in text]
    cut = min(positions) if positions else -1
    if cut <= 0:
        raise click.BadParameter(f"{text!r} is not {what}")
    return text[:cut], text[cut + 1 :]


def param_value(text: str) -> Any:
    """A value as JSON when it parses (`5`, `2.5`, `true`, `null`, `[1,2]`, `"5"`), else the
    text itself: `--param message=hello` needs no quoting, `--param seconds=5` is a number."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def params(pairs: Iterable[str], params_json: str | None = None) -> dict[str, Any]:
    """`--params-json` (a JSON object) overlaid by each `--param key=value`."""
    result: dict[str, Any] = {}
    if params_json is not None:
        try:
            loaded = json.loads(params_json)
        except ValueError as error:
            raise click.BadParameter(f"not JSON: {error}", param_hint="--params-json") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--params-json")
        result.update(loaded)
    for pair in pairs:
        key, value = split_pair(pair, "key=value")
        result[key] = param_value(value)
    return result


def labels(pairs: Iterable[str]) -> dict[str, str]:
    """`--label team=data` (or `team:data`) pairs as the API's labels object."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, value = split_pair(pair, "key=value", "=:")
        result[key] = value
    return result


def label_filters(pairs: Iterable[str]) -> list[str]:
    """`--label team=data` filters as the API's `label=key:value` query values."""
    return [f"{key}:{value}" for key, value in labels(pairs).items()]


def env(pairs: Iterable[str]) -> dict[str, str]:
    """`--env KEY=VALUE` pairs (values kept as text: they are the app's environment)."""
    return dict(split_pair(pair, "KEY=VALUE") for pair in pairs)


def duration(text: str) -> float:
    """`90`, `90s`, `5m`, `2h`, `1d`, `1h30m` -> seconds."""
    cleaned = text.strip().lower()
    try:
        seconds = float(cleaned)
    except ValueError:
        parts = _DURATION_PART.findall(cleaned)
        if not parts or "".join(number + unit for number, unit in parts) != cleaned:
            raise click.BadParameter(
                f"{text!r} is not a duration (e.g. 90s, 5m, 2h, 1h30m)"
            ) from None
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds < 0:
        raise click.BadParameter(f"{text!r} is negative")
    return seconds


def instant(text: str) -> datetime:
    """An ISO 8601 time (`2026-11-27T03:00:00Z`, `2026-11-27 03:00`); one without a UTC
    offset is read in the local time zone. Returned timezone-aware."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-11-27T03:00:00Z)"
        ) from None
    return value if value.tzinfo is not None else value.astimezone()
