"""Encryption at rest of deploy `env` values (Fernet: AES-128-CBC with HMAC-SHA256).

The key comes from DEPLOY_SECRETS_KEY: a Fernet key as `Fernet.generate_key()` prints it is
used as is; any other value (say `openssl rand -hex 32`) is stretched into one with
HKDF-SHA256, so a random secret of any form works. Several comma-separated keys allow
rotation: the first encrypts, every one decrypts. Without DEPLOY_SECRETS_KEY (development
and test only: production refuses to start, see shared/config.py) the key is derived from
JWT_SECRET_KEY, so the API that encrypts and the workers that decrypt agree on it without
set-up; a warning says so once per process.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.config import Settings, get_settings

log = logging.getLogger(__name__)
_INFO = b"dockyard deploy env v1"


class SecretsError(Exception):
    """A stored value that no configured key opens (a wrong or rotated-away key)."""


def _fernet_key(secret: str) -> bytes:
    """The secret itself when it is a Fernet key, else a key derived from it."""
    raw = secret.strip().encode()
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32 and len(raw) == 44:
            return raw
    except (binascii.Error, ValueError):
        pass
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(raw)
    return base64.urlsafe_b64encode(derived)


@lru_cache(maxsize=8)
def _cipher(keys: str, fallback: str) -> MultiFernet:
    if not keys:
        log.warning(
            "DEPLOY_SECRETS_KEY is not set: deploy env values are encrypted with a key derived "
            "from JWT_SECRET_KEY (development and test only; production refuses to start)",
            extra={"event": "deploy_secrets_key_derived"},
        )
        return MultiFernet([Fernet(_fernet_key("deploy-env:" + fallback))])
    return MultiFernet([Fernet(_fernet_key(k)) for k in keys.split(",") if k.strip()])


def cipher(settings: Settings | None = None) -> MultiFernet:
    settings = settings or get_settings()
    return _cipher(settings.deploy_secrets_key, settings.jwt_secret_key)


def encrypt_env(env: dict[str, str], settings: Settings | None = None) -> str:
    """The env mapping as one Fernet token (text, for a text column)."""
    plain = json.dumps(env, separators=(",", ":"), sort_keys=True).encode()
    return cipher(settings).encrypt(plain).decode()


def decrypt_env(token: str | None, settings: Settings | None = None) -> dict[str, str]:
    """The env mapping back; an emptied column (deleted after retention) is no variables."""
    if not token:
        return {}
    try:
        env: dict[str, str] = json.loads(cipher(settings).decrypt(token.encode()))
        return env
    except InvalidToken:
        raise SecretsError(
            "deploy env cannot be decrypted with DEPLOY_SECRETS_KEY (wrong or rotated key)"
        ) from None
