"""Build the configured storage backend."""

from __future__ import annotations

import hashlib

from shared.config import Settings
from shared.storage.base import Storage

LOCAL_DOWNLOAD_PATH = "/api/v1/files"


def signing_key(settings: Settings) -> bytes:
    """STORAGE_SIGNING_KEY, or one derived from the JWT secret (never the secret itself)."""
    if settings.storage_signing_key:
        return settings.storage_signing_key.encode()
    return hashlib.sha256(b"dockyard-storage-urls:" + settings.jwt_secret_key.encode()).digest()


def build_storage(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        from shared.storage.s3 import S3Storage
        from shared.storage.signed_urls import SignedUrls

        api_urls = None
        if settings.s3_downloads == "api":
            api_urls = SignedUrls(signing_key(settings), _api_download_base(settings))
        return S3Storage(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            create_bucket=settings.s3_create_bucket,
            public_endpoint_url=settings.s3_public_endpoint_url or None,
            api_urls=api_urls,
        )
    from shared.storage.local import LocalStorage

    return LocalStorage(
        settings.storage_local_root, signing_key(settings), _api_download_base(settings)
    )


def _api_download_base(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/") + LOCAL_DOWNLOAD_PATH
