"""The OpenAPI document and an interactive Swagger UI page served from a bundled copy
(no CDN: the docs work offline and under a strict Content-Security-Policy)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, send_from_directory
from swagger_ui_bundle import swagger_ui_path

bp = Blueprint("docs", __name__)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Dockyard API</title>
<link rel="stylesheet" href="docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="docs/static/swagger-ui-bundle.js"></script>
<script src="docs/static/init.js"></script></body></html>"""

_INIT = """window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui",
  persistAuthorization: false});"""

_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@bp.get("/openapi.json")
def openapi() -> Response:
    spec = current_app.extensions.get("dockyard_openapi")
    if spec is None:
        from api.openapi import build_spec

        spec = current_app.extensions["dockyard_openapi"] = build_spec(current_app)
    return jsonify(spec)


@bp.get("/docs")
def docs_page() -> Response:
    return Response(_PAGE, mimetype="text/html", headers={"Content-Security-Policy": _PAGE_CSP})


@bp.get("/docs/static/init.js")
def docs_init() -> Response:
    return Response(_INIT, mimetype="text/javascript")


@bp.get("/docs/static/<path:filename>")
def docs_static(filename: str) -> Response:
    return send_from_directory(swagger_ui_path, filename)
