"""Configuration: defaults work, bad values stop start-up with one line naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.config import DEFAULT_JWT_SECRET, ConfigError, load_settings


def test_defaults_work_for_a_developer_machine() -> None:
    settings = load_settings({})
    assert settings.env == "development"
    assert settings.database_url.startswith("postgresql+psycopg2://")
    assert settings.result_backend == "db+" + settings.database_url
    assert settings.jwt_secret_key == DEFAULT_JWT_SECRET


def test_plain_postgresql_url_gets_the_psycopg2_result_backend() -> None:
    settings = load_settings({"DATABASE_URL": "postgresql://u:p@db/x"})
    assert settings.result_backend == "db+postgresql+psycopg2://u:p@db/x"


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("QUOTA_ACTIVE_JOBS", "many", "must be an integer"),
        ("QUOTA_ACTIVE_JOBS", "-1", "must be >= 0"),
        ("JWT_ACCESS_TOKEN_EXPIRES", "0", "must be >= 1"),
        ("RETRY_BACKOFF_BASE", "fast", "must be a number"),
        ("DATABASE_URL", "mysql://x", "must be a URL"),
        ("CELERY_BROKER_URL", "amqp://x", "must be a URL"),
        ("DOCKYARD_ENV", "staging", "must be one of"),
        ("RETRY_JITTER", "2", "between 0 and 1"),
        ("LOG_JSON", "maybe", "true or false"),
        ("JOB_MAX_ATTEMPTS", "20", "must not exceed JOB_MAX_ATTEMPTS_LIMIT"),
        ("BROKER_VISIBILITY_TIMEOUT", "100", "longer than RETRY_BACKOFF_MAX"),
    ],
)
def test_malformed_values_name_the_variable(variable: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    message = str(caught.value)
    assert variable in message and fragment in message
    assert "\n" not in message


def test_production_refuses_the_default_jwt_secret() -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        load_settings({"DOCKYARD_ENV": "production"})
    with pytest.raises(ConfigError, match="at least 32"):
        load_settings({"DOCKYARD_ENV": "production", "JWT_SECRET_KEY": "short"})
    ok = load_settings({"DOCKYARD_ENV": "production", "JWT_SECRET_KEY": "k" * 40})
    assert ok.is_production


def test_start_up_fails_with_one_clear_line() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from api import create_app; create_app()"],
        env={"QUOTA_ACTIVE_JOBS": "lots", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "configuration error: QUOTA_ACTIVE_JOBS must be an integer, got 'lots'"
    )
