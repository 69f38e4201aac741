"""The storage interface and the key rules every backend shares."""

from __future__ import annotations

import re
import unicodedata
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from shared.storage.signed_urls import SignedUrls

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class StorageError(Exception):
    """The storage service failed (retryable for workers, 503 for the API)."""


class ObjectMissing(StorageError):
    """The object does not exist (404 for the API's download route)."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    content_type: str


def safe_filename(name: str | None, default: str = "file") -> str:
    """A file name reduced to [A-Za-z0-9._-], without leading dots, at most 100 characters."""
    normalised = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode()
    base = normalised.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._")[:100]
    return cleaned or default


def object_key(owner_id: uuid.UUID, job_id: uuid.UUID, kind: str, filename: str) -> str:
    """users/<owner>/jobs/<job>/<kind>/<safe file name>: per-user, per-job prefixes."""
    if kind not in ("input", "result"):
        raise ValueError(f"unknown object kind {kind!r}")
    return f"users/{owner_id}/jobs/{job_id}/{kind}/{safe_filename(filename)}"


def job_prefix(owner_id: uuid.UUID, job_id: uuid.UUID) -> str:
    return f"users/{owner_id}/jobs/{job_id}/"


class Storage(ABC):
    """What the API and workers need from object storage."""

    # Set when download URLs point at the API (`/api/v1/files/...`), which checks them with
    # this and streams the object from `open`; None when users fetch from the backend itself.
    api_urls: SignedUrls | None = None

    @abstractmethod
    def put(self, key: str, stream: BinaryIO, content_type: str) -> StoredObject:
        """Store a stream without holding it all in memory."""

    @abstractmethod
    def open(self, key: str) -> Iterator[bytes]:
        """The object's bytes, in chunks."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; a missing one is not an error."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under a prefix; returns how many."""

    @abstractmethod
    def download_url(self, key: str, filename: str, expires_in: int) -> str:
        """A URL that downloads the object as an attachment until it expires."""

    @abstractmethod
    def ensure_ready(self) -> None:
        """Create what the backend needs (a bucket, a directory); called at start-up."""
