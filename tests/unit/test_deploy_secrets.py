"""DEPLOY_SECRETS_KEY: required in production, and the encryption of deploy env values
(Fernet keys as given, other secrets stretched into one, rotation, wrong keys refused)."""

from __future__ import annotations

import logging
import secrets

import pytest
from cryptography.fernet import Fernet

from shared.config import ConfigError, load_settings
from shared.security.crypto import SecretsError, decrypt_env, encrypt_env

# Production with every other secret set to a random value (shared/config.py refuses the
# shipped ones), so the only thing missing is DEPLOY_SECRETS_KEY.
PRODUCTION = {
    "DOCKYARD_ENV": "production",
    "JWT_SECRET_KEY": secrets.token_hex(32),
    "DATABASE_URL": f"postgresql+psycopg2://dockyard:{secrets.token_hex(16)}@db:5432/dockyard",
}


def test_production_without_deploy_secrets_key_refuses_to_start() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(PRODUCTION)
    assert refused.value.variable == "DEPLOY_SECRETS_KEY"
    assert "DEPLOY_SECRETS_KEY" in str(refused.value)
    key = Fernet.generate_key().decode()
    assert load_settings({**PRODUCTION, "DEPLOY_SECRETS_KEY": key}).deploy_secrets_key == key


def test_development_without_a_key_derives_one_and_warns(caplog) -> None:
    settings = load_settings({"DOCKYARD_ENV": "development", "JWT_SECRET_KEY": "x" * 40})
    with caplog.at_level(logging.WARNING, logger="shared.security.crypto"):
        token = encrypt_env({"A": "1"}, settings)
    assert decrypt_env(token, settings) == {"A": "1"}
    assert any("DEPLOY_SECRETS_KEY is not set" in r.getMessage() for r in caplog.records)
    # Another JWT secret derives another key: nothing fixed opens the values.
    other = load_settings({"DOCKYARD_ENV": "development", "JWT_SECRET_KEY": "y" * 40})
    with pytest.raises(SecretsError):
        decrypt_env(token, other)


@pytest.mark.parametrize(
    "key", [Fernet.generate_key().decode(), secrets.token_hex(32)], ids=["fernet", "hex"]
)
def test_values_are_encrypted_and_read_back(key: str) -> None:
    settings = load_settings({"DEPLOY_SECRETS_KEY": key})
    value = f"s3cret-{secrets.token_hex(8)}"
    token = encrypt_env({"PASSWORD": value, "NAME": "n"}, settings)
    assert value not in token and "PASSWORD" not in token
    assert decrypt_env(token, settings) == {"PASSWORD": value, "NAME": "n"}
    assert encrypt_env({"PASSWORD": value}, settings) != encrypt_env({"PASSWORD": value}, settings)
    assert decrypt_env(None, settings) == {}  # deleted after the retention


def test_keys_rotate_first_encrypts_all_decrypt() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = encrypt_env({"A": "1"}, load_settings({"DEPLOY_SECRETS_KEY": old}))
    rotated = load_settings({"DEPLOY_SECRETS_KEY": f"{new},{old}"})
    assert decrypt_env(token, rotated) == {"A": "1"}
    fresh = encrypt_env({"A": "2"}, rotated)
    assert decrypt_env(fresh, load_settings({"DEPLOY_SECRETS_KEY": new})) == {"A": "2"}
    with pytest.raises(SecretsError):
        decrypt_env(fresh, load_settings({"DEPLOY_SECRETS_KEY": old}))


def test_build_limit_and_firewall_settings_are_validated() -> None:
    settings = load_settings(
        {"DEPLOY_BUILD_CPUS": "1.5", "DEPLOY_BUILD_PIDS": "300", "DEPLOY_EGRESS_DENY": "none"}
    )
    assert (settings.deploy_build_cpus, settings.deploy_build_pids) == (1.5, 300)
    assert settings.deploy_egress_deny == ()
    for variable, raw in (
        ("DEPLOY_BUILD_CPUS", "lots"),
        ("DEPLOY_BUILD_PIDS", "3"),
        ("DEPLOY_FIREWALL", "maybe"),
        ("DEPLOY_EGRESS_DENY", "10.0.0.0/33"),
    ):
        with pytest.raises(ConfigError) as refused:
            load_settings({variable: raw})
        assert refused.value.variable == variable
