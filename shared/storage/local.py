"""Storage on local disk; download URLs are served and signed by the API (signed_urls)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from shared.storage.base import ObjectMissing, Storage, StorageError, StoredObject
from shared.storage.signed_urls import SignedUrls

_CHUNK = 1024 * 1024


class LocalStorage(Storage):
    def __init__(self, root: str | Path, signing_key: bytes, url_base: str) -> None:
        self.root = Path(root).resolve()
        self.api_urls: SignedUrls = SignedUrls(signing_key, url_base)  # always set here

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(f"key escapes the storage root: {key!r}")
        return path

    def ensure_ready(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, stream: BinaryIO, content_type: str) -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        size = 0
        try:
            with partial.open("wb") as out:
                while chunk := stream.read(_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
            os.replace(partial, path)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise StorageError(f"cannot write {key}: {error}") from error
        return StoredObject(key, size, content_type)

    def open(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError as error:
            raise ObjectMissing(f"no object {key}") from error
        with handle:
            while chunk := handle.read(_CHUNK):
                yield chunk

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        directory = self._path(prefix.rstrip("/"))
        if not directory.exists():
            return 0
        count = sum(1 for p in directory.rglob("*") if p.is_file())
        shutil.rmtree(directory, ignore_errors=True)
        return count

    def download_url(self, key: str, filename: str, expires_in: int) -> str:
        return self.api_urls.url(key, filename, expires_in)

    def check(self, key: str, filename: str, expires: str, signature: str) -> str | None:
        """None for a valid URL, else why not: "invalid" (altered) or "expired"."""
        return self.api_urls.check(key, filename, expires, signature)

    def path_for(self, key: str) -> Path:
        return self._path(key)
