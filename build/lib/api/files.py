"""Downloads for the local storage backend, through URLs the API signed.

The signed URL is the credential (like an S3 presigned URL): no bearer token, so browsers
and scripts can fetch it directly. Expired or altered URLs answer 403.
"""

from __future__ import annotations

import mimetypes

from flask import Blueprint, Response, current_app, request, send_file

from api.errors import ApiError, not_found
from api.openapi import doc
from shared.storage.base import StorageError
from shared.storage.local import LocalStorage

bp = Blueprint("files", __name__, url_prefix="/files")

_REFUSALS = {
    "invalid": ("invalid_download_url", "This download URL is not valid."),
    "expired": ("download_url_expired", "This download URL has expired; request a new one."),
}


@bp.get("/<path:key>")
@doc(
    summary="Download through a signed URL (local storage backend)",
    tags=["files"],
    auth=None,
    errors=(403, 404),
    content_type="application/octet-stream",
)
def download(key: str) -> Response:
    storage = current_app.extensions["dockyard_storage"]
    if not isinstance(storage, LocalStorage):
        raise not_found("file")
    filename = request.args.get("filename", "")
    refusal = storage.check(
        key, filename, request.args.get("expires", ""), request.args.get("signature", "")
    )
    if refusal is not None:
        raise ApiError(403, *_REFUSALS[refusal])
    try:
        path = storage.path_for(key)
    except StorageError:
        raise not_found("file") from None
    if not path.is_file():
        raise not_found("file")
    mimetype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return send_file(path, mimetype=mimetype, as_attachment=True, download_name=filename, max_age=0)
