"""Downloads through URLs the API signed: the local storage backend, and the S3 backend
with S3_DOWNLOADS=api (S3 not reachable by users; the object is streamed from S3).

The signed URL is the credential (like an S3 presigned URL): no bearer token, so browsers
and scripts can fetch it directly. Expired or altered URLs answer 403.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator

from flask import Blueprint, Response, request, send_file, stream_with_context

from api.errors import ApiError, not_found
from api.extensions import storage
from api.operation import doc, query_parameter
from shared.storage.base import ObjectMissing, Storage, StorageError
from shared.storage.local import LocalStorage

bp = Blueprint("files", __name__, url_prefix="/files")

_REFUSALS = {
    "invalid": ("invalid_download_url", "This download URL is not valid."),
    "expired": ("download_url_expired", "This download URL has expired; request a new one."),
}
#: The signed URL's query, read by the view itself (the document shows its bounds).
_SIGNED_URL_QUERY = (
    query_parameter("filename", {"type": "string", "maxLength": 200}),
    query_parameter("expires", {"type": "string", "pattern": "^[0-9]{1,12}$"}),
    query_parameter("signature", {"type": "string", "pattern": "^[0-9a-f]{64}$"}),
)


@bp.get("/<path:key>")
@doc(
    summary="Download through a URL the API signed (local backend, or S3_DOWNLOADS=api)",
    tags=["files"],
    auth=None,
    errors=(403, 404, 503),
    content_type="application/octet-stream",
    parameters=_SIGNED_URL_QUERY,
)
def download(key: str) -> Response:
    backend = storage()
    if backend.api_urls is None:
        raise not_found("file")
    filename = request.args.get("filename", "")
    refusal = backend.api_urls.check(
        key, filename, request.args.get("expires", ""), request.args.get("signature", "")
    )
    if refusal is not None:
        raise ApiError(403, *_REFUSALS[refusal])
    mimetype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if not isinstance(backend, LocalStorage):
        return _stream(backend, key, filename, mimetype)
    try:
        path = backend.path_for(key)
    except StorageError:
        raise not_found("file") from None
    if not path.is_file():
        raise not_found("file")
    return send_file(path, mimetype=mimetype, as_attachment=True, download_name=filename, max_age=0)


def _stream(storage: Storage, key: str, filename: str, mimetype: str) -> Response:
    """The object streamed from the backend; its first chunk is read here, so a missing
    object answers 404 and an unreachable backend 503 before any byte is sent."""
    chunks = storage.open(key)
    try:
        first = next(chunks, b"")
    except ObjectMissing:
        raise not_found("file") from None

    def body() -> Iterator[bytes]:
        yield first
        yield from chunks

    response = Response(stream_with_context(body()), mimetype=mimetype)
    response.headers.set("Content-Disposition", "attachment", filename=filename)
    response.headers["Cache-Control"] = "no-cache"
    return response
