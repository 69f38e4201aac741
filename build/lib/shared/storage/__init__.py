"""Object storage for job inputs and results: one interface, two backends (local disk, S3).

Keys are built only by `object_key()` from ids and a sanitised file name, so nothing a user
sends can steer a key outside its owner's and job's prefix.
"""

from shared.storage.base import Storage, StorageError, StoredObject, object_key, safe_filename
from shared.storage.factory import build_storage

__all__ = [
    "Storage",
    "StorageError",
    "StoredObject",
    "build_storage",
    "object_key",
    "safe_filename",
]
