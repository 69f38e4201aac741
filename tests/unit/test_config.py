"""Configuration: defaults work, bad values stop start-up with one line naming the variable."""

from __future__ import annotations

import base64
import os
import re
import secrets
import stat
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest
import yaml

from shared.config import (
    DEFAULT_JWT_SECRET,
    ENVIRONMENT_ONLY,
    SETTINGS,
    SHIPPED_SECRETS,
    ConfigError,
    Secret,
    Settings,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]


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
        load_settings({**production_env(), "JWT_SECRET_KEY": ""})
    with pytest.raises(ConfigError, match="at least 32"):
        load_settings({**production_env(), "JWT_SECRET_KEY": "short"})
    ok = load_settings(production_env())
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


# The production variable each repository variable's value ends up in.
FEEDS = {
    "JWT_SECRET_KEY": "JWT_SECRET_KEY",
    "STORAGE_SIGNING_KEY": "STORAGE_SIGNING_KEY",
    "METRICS_TOKEN": "METRICS_TOKEN",
    "DEPLOY_SECRETS_KEY": "DEPLOY_SECRETS_KEY",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "MINIO_ROOT_PASSWORD": "AWS_SECRET_ACCESS_KEY",
    "FLOWER_BASIC_AUTH": "FLOWER_BASIC_AUTH",
    "POSTGRES_PASSWORD": "DATABASE_URL",
    "DB_PASSWORD": "DATABASE_URL",
    "DATABASE_URL": "DATABASE_URL",
}
TARGETS = sorted(set(FEEDS.values()))


def production_env(**changes: str) -> dict[str, str]:
    """A production environment whose every secret is random and long enough."""
    env = {
        "DOCKYARD_ENV": "production",
        "DATABASE_URL": f"postgresql+psycopg2://dockyard:{secrets.token_hex(16)}@db/dockyard",
        "JWT_SECRET_KEY": secrets.token_hex(32),
        "STORAGE_SIGNING_KEY": secrets.token_hex(32),
        "METRICS_TOKEN": secrets.token_hex(32),
        "DEPLOY_SECRETS_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "STORAGE_BACKEND": "s3",
        "AWS_ACCESS_KEY_ID": "dockyard-ops",
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
        "FLOWER_BASIC_AUTH": f"admin:{secrets.token_hex(24)}",
    }
    return {**env, **changes}


def with_value(target: str, value: str) -> dict[str, str]:
    """A production environment whose `target` carries `value`."""
    if target == "DATABASE_URL":
        return production_env(DATABASE_URL=f"postgresql://u:{quote(value, safe='')}@db/d")
    if target == "FLOWER_BASIC_AUTH" and ":" not in value:
        value = f"admin:{value}"
    return production_env(**{target: value})


def shipped_values() -> set[tuple[str, str]]:
    """(variable, value) for every secret value the repository's files ship: .env.example,
    the compose files, the k8s manifests, the scripts and the code's defaults."""
    found: set[tuple[str, str]] = set()
    names = "|".join(FEEDS)
    texts = [ROOT / ".env.example", ROOT / "Makefile", ROOT / "docker-compose.yml"]
    texts += sorted((ROOT / "deploy" / "compose").glob("*.yml"))
    texts += sorted((ROOT / "scripts").glob("*.sh"))
    for path in texts:
        text = path.read_text()
        for match in re.finditer(rf"\$\{{({names}):?-([^}}]*)\}}", text):
            found.add((match[1], match[2]))
        for match in re.finditer(rf"^\s*(?:export\s+)?({names})=(.*)$", text, re.MULTILINE):
            found.add((match[1], match[2].strip().strip("\"'")))
        if path.suffix == ".yml":
            found |= _literal_yaml_values(yaml.safe_load(text))
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for doc in filter(None, yaml.safe_load_all(path.read_text())):
            found |= _literal_yaml_values(doc)
            if doc["kind"] == "Secret":
                found |= set(doc.get("stringData", {}).items())
                found |= {(k, base64.b64decode(v).decode()) for k, v in doc.get("data", {}).items()}
    defaults = {f.name: f.default for f in fields(Settings)}
    found |= {
        ("JWT_SECRET_KEY", defaults["jwt_secret_key"]),
        ("DATABASE_URL", defaults["database_url"]),
        ("STORAGE_SIGNING_KEY", defaults["storage_signing_key"]),
        ("METRICS_TOKEN", defaults["metrics_token"]),
    }
    values = set()
    for name, value in found:
        if name not in FEEDS or "${" in value:
            continue
        if name == "DATABASE_URL":
            value = urlparse(value).password or ""
        if value:
            values.add((name, value))
    return values


def _literal_yaml_values(node: object) -> set[tuple[str, str]]:
    """Literal values of secret variables anywhere in a YAML document: mappings
    (`JWT_SECRET_KEY: x`) and k8s env entries (`{name: JWT_SECRET_KEY, value: x}`)."""
    found: set[tuple[str, str]] = set()
    if isinstance(node, dict):
        if isinstance(node.get("name"), str) and isinstance(node.get("value"), str):
            found.add((node["name"], node["value"]))
        for key, value in node.items():
            if key in FEEDS and isinstance(value, str):
                found.add((key, value))
            found |= _literal_yaml_values(value)
    elif isinstance(node, list):
        for item in node:
            found |= _literal_yaml_values(item)
    return found


def test_the_repository_files_are_read() -> None:
    """The scan sees what today's files still ship (make run's Flower login, the setup
    script's development database password, the code's JWT default)."""
    values = shipped_values()
    assert ("FLOWER_BASIC_AUTH", "admin:dockyard") in values
    assert ("DB_PASSWORD", "dockyard") in values
    assert ("JWT_SECRET_KEY", DEFAULT_JWT_SECRET) in values


@pytest.mark.parametrize("target", TARGETS)
def test_production_refuses_every_value_the_repository_ships(target: str) -> None:
    """Every secret value in the repository's files, and every value SHIPPED_SECRETS keeps
    from earlier versions, is refused for every secret variable, naming the variable and
    never echoing the value."""
    values = {value for _, value in shipped_values()} | SHIPPED_SECRETS
    for value in sorted(values):
        with pytest.raises(ConfigError) as caught:
            load_settings(with_value(target, value))
        assert caught.value.variable == target, (target, value)
        assert value not in str(caught.value)


@pytest.mark.parametrize("target", ["JWT_SECRET_KEY", "STORAGE_SIGNING_KEY", "METRICS_TOKEN",
                                    "DEPLOY_SECRETS_KEY", "FLOWER_BASIC_AUTH"])  # fmt: skip
def test_production_refuses_short_secrets(target: str) -> None:
    with pytest.raises(ConfigError, match="at least 32") as caught:
        load_settings(with_value(target, secrets.token_hex(15)))  # 30 characters
    assert caught.value.variable == target
    assert load_settings(with_value(target, secrets.token_hex(16))).is_production


def test_every_declared_secret_is_what_production_checks() -> None:
    """The secret column of docs/configuration.md is the production check: every variable
    declared secret is refused when shipped, and a short value is refused exactly for the
    ones a person or `make up` chooses (not for a provider's AWS key or database password)."""
    declared = {v.env: v.secret for v in (*SETTINGS, *ENVIRONMENT_ONLY) if v.secret.value}
    assert sorted(declared) == TARGETS
    for target, secret in declared.items():
        with pytest.raises(ConfigError) as caught:
            load_settings(with_value(target, "change-me"))
        assert caught.value.variable == target
        short = with_value(target, secrets.token_hex(15))
        if secret is Secret.CHOSEN:
            with pytest.raises(ConfigError, match="at least 32"):
                load_settings(short)
        else:
            assert load_settings(short).is_production


def test_aws_and_database_passwords_have_no_length_rule() -> None:
    """Their provider decides their form; only the repository's values are refused."""
    assert load_settings(with_value("AWS_SECRET_ACCESS_KEY", "Short-but-AWS's-own")).is_production
    assert load_settings(with_value("DATABASE_URL", "managed-db-pw")).is_production
    assert load_settings(production_env(STORAGE_BACKEND="local", AWS_SECRET_ACCESS_KEY="dockyard"))


def test_development_accepts_the_shipped_defaults() -> None:
    assert load_settings({"FLOWER_BASIC_AUTH": "admin:dockyard"}).jwt_secret_key == (
        DEFAULT_JWT_SECRET
    )


def test_compose_files_default_no_secret() -> None:
    """docker-compose.yml and its override files require every secret from the env file
    (`${VAR:?...}`): none has a default but an empty one (METRICS_TOKEN off)."""
    names = "|".join([*FEEDS, "MINIO_ROOT_USER", "AWS_ACCESS_KEY_ID"])
    for path in [ROOT / "docker-compose.yml", *(ROOT / "deploy" / "compose").glob("*.yml")]:
        for match in re.finditer(rf"\$\{{({names})(:?[-?])?([^}}]*)\}}", path.read_text()):
            assert match[2] in (":?", ":-", "-"), match[0]
            assert match[2] == ":?" or match[3] == "", f"{path.name}: {match[0]}"


def test_env_example_ships_no_secret_value() -> None:
    text = (ROOT / ".env.example").read_text()
    for name in [*FEEDS, "MINIO_ROOT_USER"]:
        for value in re.findall(rf"^{name}=(.*)$", text, re.MULTILINE):
            assert value.strip() == "", name


def test_make_env_writes_random_secrets_that_production_accepts(tmp_path: Path) -> None:
    """scripts/make_env.sh (under `make up`): a new file with random secrets, mode 0600; a
    second file gets different ones; an existing file keeps its values and gains only the
    missing keys; the result passes production's checks."""
    first, second = tmp_path / "first.env", tmp_path / "second.env"
    for path in (first, second):
        subprocess.run([str(ROOT / "scripts" / "make_env.sh"), str(path)], check=True)
    a, b = _read_env(first), _read_env(second)
    generated = ["JWT_SECRET_KEY", "STORAGE_SIGNING_KEY", "DEPLOY_SECRETS_KEY",
                 "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "FLOWER_BASIC_AUTH"]  # fmt: skip
    assert set(generated) | {"MINIO_ROOT_USER"} <= set(a)
    for name in generated:
        assert len(a[name].partition(":")[2] or a[name]) >= 32 and a[name] != b[name], name
    assert len(base64.urlsafe_b64decode(a["DEPLOY_SECRETS_KEY"])) == 32
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    before = first.read_text()
    subprocess.run([str(ROOT / "scripts" / "make_env.sh"), str(first)], check=True)
    assert first.read_text() == before
    partial = tmp_path / "partial.env"
    partial.write_text("API_PORT=18000\nJWT_SECRET_KEY=mine-" + "x" * 40 + "\nMETRICS_TOKEN=\n")
    subprocess.run([str(ROOT / "scripts" / "make_env.sh"), str(partial)], check=True)
    kept = _read_env(partial)
    assert kept["API_PORT"] == "18000" and kept["JWT_SECRET_KEY"] == "mine-" + "x" * 40
    assert kept["METRICS_TOKEN"] == "" and len(kept["POSTGRES_PASSWORD"]) >= 32
    env = production_env(
        DATABASE_URL=f"postgresql+psycopg2://dockyard:{a['POSTGRES_PASSWORD']}@db/dockyard",
        AWS_SECRET_ACCESS_KEY=a["MINIO_ROOT_PASSWORD"],
        **{
            k: a[k]
            for k in (
                "JWT_SECRET_KEY",
                "STORAGE_SIGNING_KEY",
                "DEPLOY_SECRETS_KEY",
                "FLOWER_BASIC_AUTH",
            )
        },  # fmt: skip
    )
    assert load_settings(env).is_production


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
