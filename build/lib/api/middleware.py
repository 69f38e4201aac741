"""Per-request plumbing: request ids, security headers and access logging."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from shared import logging_setup

log = logging.getLogger("api.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_JSON_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


def _request_id() -> str:
    """Honour the caller's X-Request-ID when it is safe to log, else make one."""
    candidate = request.headers.get("X-Request-ID", "")
    return candidate if _REQUEST_ID.match(candidate) else uuid.uuid4().hex


def register_middleware(app: Flask) -> None:
    @app.before_request
    def start_request() -> None:
        g.request_id = _request_id()
        g.started = time.perf_counter()
        logging_setup.clear()
        logging_setup.bind(request_id=g.request_id)

    @app.after_request
    def finish_request(response: Response) -> Response:
        response.headers["X-Request-ID"] = getattr(g, "request_id", "") or _request_id()
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        if response.mimetype == "application/json":
            response.headers["Content-Security-Policy"] = _JSON_CSP
        elapsed_ms = (time.perf_counter() - getattr(g, "started", time.perf_counter())) * 1000
        log.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "event": "http_request",
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(elapsed_ms, 2),
            },
        )
        return response
