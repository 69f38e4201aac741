"""The command line's pure parts, without a server: `key=value` params and labels,
durations and times, the credentials file, error rendering and NO_COLOR."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime

import click
import pytest

from dockyard_client import credentials
from dockyard_client.cli import invoke, parsing
from dockyard_client.cli.exits import error_lines
from dockyard_client.cli.output import when
from dockyard_client.cli.state import make_console, same_api
from dockyard_client.errors import ValidationError


def test_param_values_are_json_when_they_parse_else_text() -> None:
    assert parsing.params(["seconds=5", "ratio=2.5", "on=true", "none=null", "list=[1,2]"]) == {
        "seconds": 5,
        "ratio": 2.5,
        "on": True,
        "none": None,
        "list": [1, 2],
    }
    assert parsing.params(["message=hello world", 'quoted="5"', "eq=a=b"]) == {
        "message": "hello world",
        "quoted": "5",
        "eq": "a=b",
    }
    assert parsing.params(["steps=3"], '{"seconds": 1, "steps": 1}') == {"seconds": 1, "steps": 3}
    for bad in (["novalue"], ["=x"]):
        with pytest.raises(click.BadParameter):
            parsing.params(bad)
    for bad_json in ("[1]", "{nope"):
        with pytest.raises(click.BadParameter):
            parsing.params([], bad_json)


def test_labels_env_and_filters() -> None:
    assert parsing.labels(["team=data", "env:prod"]) == {"team": "data", "env": "prod"}
    assert parsing.label_filters(["team=data"]) == ["team:data"]
    assert parsing.env(["URL=postgres://u:p@h/db?x=1"]) == {"URL": "postgres://u:p@h/db?x=1"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parsing.duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5x", "m5", "-5", "1h 30m", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parsing.duration(text)


def test_instants_are_aware() -> None:
    assert parsing.instant("2026-11-27T03:00:00Z") == datetime(2026, 11, 27, 3, tzinfo=UTC)
    assert parsing.instant("2026-11-27 03:00").tzinfo is not None  # local time
    with pytest.raises(click.BadParameter):
        parsing.instant("tomorrow")


def test_credentials_are_created_0600_in_a_0700_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = credentials.credentials_path()
    assert path == tmp_path / "config" / "dockyard" / "credentials.json"
    assert credentials.load() is None
    saved = credentials.Credentials("http://api", "access", "refresh", "me@example.com")
    credentials.save(saved)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert credentials.load() == saved
    credentials.save(credentials.Credentials("http://api", "new"))  # replaced atomically
    assert credentials.load() == credentials.Credentials("http://api", "new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["credentials.json"]  # no temp left
    assert credentials.remove() is True and credentials.remove() is False


def test_credentials_default_to_home_config(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert credentials.credentials_path() == tmp_path / ".config" / "dockyard" / "credentials.json"
    (tmp_path / ".config" / "dockyard").mkdir(parents=True)
    credentials.credentials_path().write_text(json.dumps({"api_url": "x"}))
    assert credentials.load() is None  # not a login: ignored


def test_a_validation_error_shows_each_field_and_the_request_id() -> None:
    error = ValidationError(
        "The processor's parameters are not valid.",
        status=422,
        code="invalid_params",
        details={"fields": {"params": {"seconds": ["Not a valid number."]}}, "limit": 3},
        request_id="abc123",
    )
    assert error_lines(error) == [
        "invalid_params: The processor's parameters are not valid.",
        "  params.seconds: Not a valid number.",
        "  limit: 3",
        "  request id: abc123",
    ]


def test_saved_tokens_go_only_to_their_own_api() -> None:
    assert same_api("http://127.0.0.1:8000", "http://127.0.0.1:8000/api/v1/")
    assert not same_api("http://127.0.0.1:8000", "http://evil.example.com")


def test_no_color(monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert make_console(stderr=True).no_color
    monkeypatch.delenv("NO_COLOR")
    assert not make_console(stderr=True).no_color


def test_usage_errors_exit_2_in_process(capsys) -> None:
    assert invoke(["no-such-command"]) == 2
    assert invoke(["run", "debug.echo", "--in", "5m", "--at", "2030-01-01"]) == 2
    assert invoke(["--help"]) == 0
    assert "Usage: dockyard" in capsys.readouterr().out


def test_times_show_in_local_time(monkeypatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        assert when("2026-11-26T21:08:28.035649+00:00") == "2026-11-26 22:08:28"
        assert when(None) == "" and when("not a time") == "not a time"
    finally:
        monkeypatch.undo()
        time.tzset()
