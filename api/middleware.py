"""Per-request plumbing: request ids, security headers, access logging, automatic OPTIONS
answers, and the input checks that keep text the database cannot store out of every view.

PostgreSQL refuses NUL characters in text and `\\u0000` in JSONB, and psycopg2 cannot encode
lone surrogates: without these checks such input reached the database and answered 500.
A value of a field the operation declares (a JSON body field, a form field, a query
parameter) answers 422 `invalid_params` naming the field; anything else (keys, field and file
names, undeclared fields, headers, the path, a body that is not UTF-8) answers 422
`invalid_request` saying where.
"""

from __future__ import annotations

import codecs
import logging
import math
import re
import time
import uuid
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

from flask import Flask, Response, current_app, g, request
from flask import Request as FlaskRequest
from werkzeug.datastructures import Headers
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.http import parse_options_header

from api.errors import ApiError
from api.operation import operation_of
from shared import logging_setup

log = logging.getLogger("api.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_JSON_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
# NUL, and the surrogate code points a JSON "\udXXX" escape can produce but UTF-8 cannot hold.
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_BAD_VALUE = "Must be UTF-8 text without NUL characters."
_BAD_NUMBER = "Must be a finite number."


def _request_id() -> str:
    """Honour the caller's X-Request-ID when it is safe to log, else make one."""
    candidate = request.headers.get("X-Request-ID", "")
    return candidate if _REQUEST_ID.match(candidate) else uuid.uuid4().hex


# --- the checks ---------------------------------------------------------------------------


def bad_text(value: str) -> bool:
    """Whether a decoded string holds something PostgreSQL or UTF-8 cannot store."""
    return _BAD_TEXT.search(value) is not None


def invalid_request(location: str, message: str, **details: Any) -> ApiError:
    return ApiError(422, "invalid_request", message, {"location": location, **details})


def invalid_params(field: str, problem: str = _BAD_VALUE) -> ApiError:
    return ApiError(
        422,
        "invalid_params",
        "A field holds a value that is not allowed.",
        {"fields": {field: [problem]}},
    )


def check_json(document: Any, field: str = "") -> None:
    """Refuse NUL, lone surrogates and non-finite numbers anywhere in a decoded JSON value.

    `field` names where `document` sits (nested paths are dotted). Iterative, so a deeply
    nested document cannot exhaust the stack. A bad key is `invalid_request` (it names no
    field); a bad value is `invalid_params` if its top-level field is declared, else
    `invalid_request`.
    """
    declared = _declared_fields("body") if not field else None
    stack: list[tuple[str, Any]] = [(field, document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if bad_text(key):
                    raise invalid_request(
                        "body", "A JSON key holds NUL or invalid UTF-8.", field=path or None
                    )
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{index}", item) for index, item in enumerate(value))
        elif isinstance(value, str) and bad_text(value):
            raise _bad_value(path, declared, _BAD_VALUE)
        elif isinstance(value, float) and not math.isfinite(value):
            raise _bad_value(path, declared, _BAD_NUMBER)


def _bad_value(path: str, declared: set[str] | None, problem: str) -> ApiError:
    top = path.split(".", 1)[0]
    if declared is None or top in declared:
        return invalid_params(path or "body", problem)
    return invalid_request("body", "An undeclared field holds a value that is not allowed.")


def _declared_fields(location: Literal["body", "query"]) -> set[str]:
    """Field names the current operation's body (or query) schema declares."""
    rule = request.url_rule
    view = current_app.view_functions.get(rule.endpoint) if rule is not None else None
    operation = operation_of(view)
    if operation is None:
        return set()
    schema = operation.body if location == "body" else operation.query
    if schema is None:
        return set()
    return {f.data_key or name for name, f in schema._declared_fields.items()}


def _decoded(raw: bytes) -> str | None:
    """`raw` as text if it is valid UTF-8 without NUL, else None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def _check_path() -> None:
    raw = request.environ.get("PATH_INFO", "").encode("latin-1", "replace")
    if _decoded(raw) is None:
        raise invalid_request("path", "The URL path holds NUL or invalid UTF-8.")


def _check_query() -> None:
    declared = _declared_fields("query")
    for pair in request.query_string.split(b"&"):
        raw_name, _, raw_value = pair.partition(b"=")
        name = _decoded(unquote_to_bytes(raw_name.replace(b"+", b" ")))
        if name is None:
            raise invalid_request("query", "A query parameter name holds NUL or invalid UTF-8.")
        if _decoded(unquote_to_bytes(raw_value.replace(b"+", b" "))) is None:
            if name in declared:
                raise invalid_params(name)
            raise invalid_request("query", "A query parameter holds NUL or invalid UTF-8.")


def _check_headers() -> None:
    for name, value in request.headers.items():
        if _decoded(value.encode("latin-1", "replace")) is None:
            raise invalid_request("header", "A header holds NUL or invalid UTF-8.", name=name)


def _check_form(form: Any, files: Any) -> None:
    declared = _declared_fields("body")
    for name, value in form.items(multi=True):
        if bad_text(name):
            raise invalid_request("form", "A form field name holds NUL or invalid UTF-8.")
        if bad_text(value):
            if name in declared:
                raise invalid_params(name)
            raise invalid_request("form", "An undeclared form field holds NUL or invalid UTF-8.")
    for name, upload in files.items(multi=True):
        if bad_text(name) or bad_text(upload.filename or ""):
            raise invalid_request("form", "A file's field or file name holds NUL or invalid UTF-8.")


# --- a request class that parses strictly --------------------------------------------------

_STRICT_UTF8 = "dockyard-strict-utf-8"


class _FieldNotUtf8(Exception):
    """A form field's value is not UTF-8 (not a ValueError: Werkzeug would swallow that)."""


def _strict_decode(data: bytes, errors: str = "strict") -> tuple[str, int]:
    try:
        return codecs.utf_8_decode(data, "strict", True)
    except UnicodeDecodeError:
        raise _FieldNotUtf8() from None


def _find_strict_codec(name: str) -> codecs.CodecInfo | None:
    """A UTF-8 codec that ignores `errors`: Werkzeug decodes form fields with "replace",
    which would silently turn invalid UTF-8 into U+FFFD instead of refusing it."""
    if name.replace("_", "-") != _STRICT_UTF8:
        return None
    return codecs.CodecInfo(name=_STRICT_UTF8, encode=codecs.utf_8_encode, decode=_strict_decode)


codecs.register(_find_strict_codec)


class _StrictMultiPartParser(MultiPartParser):
    field: str | None = None  # the field whose value is being decoded

    def get_part_charset(self, headers: Headers) -> str:
        self.field = parse_options_header(headers.get("content-disposition"))[1].get("name")
        charset = super().get_part_charset(headers)
        return _STRICT_UTF8 if charset == "utf-8" else charset


class _StrictFormDataParser(FormDataParser):
    """Multipart and urlencoded forms whose names, file names and values are checked."""

    def _parse_multipart(
        self, stream: Any, mimetype: str, content_length: int | None, options: dict[str, str]
    ) -> Any:
        parser = _StrictMultiPartParser(
            stream_factory=self.stream_factory,
            max_form_memory_size=self.max_form_memory_size,
            max_form_parts=self.max_form_parts,
            cls=self.cls,
        )
        boundary = options.get("boundary", "").encode("ascii", "replace")
        if not boundary:
            raise ValueError("Missing boundary")  # a malformed form reads as empty, as before
        try:
            form, files = parser.parse(stream, boundary, content_length)
        except UnicodeDecodeError:  # in a part's headers: a field or file name
            raise invalid_request("form", "The form holds invalid UTF-8.") from None
        except _FieldNotUtf8:
            if parser.field in _declared_fields("body"):
                raise invalid_params(parser.field or "") from None
            raise invalid_request("form", "An undeclared form field is not UTF-8.") from None
        _check_form(form, files)
        return stream, form, files

    def _parse_urlencoded(
        self, stream: Any, mimetype: str, content_length: int | None, options: dict[str, str]
    ) -> Any:
        try:
            result = super()._parse_urlencoded(stream, mimetype, content_length, options)
        except UnicodeDecodeError:
            raise invalid_request("form", "The form holds invalid UTF-8.") from None
        _check_form(result[1], result[2])
        return result


class Request(FlaskRequest):
    """Flask's request, refusing bodies the database could not store (see the module doc)."""

    form_data_parser_class = _StrictFormDataParser

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if force or self.is_json:
            body = self.get_data(cache=True)
            if body and _is_not_utf8(body):
                raise invalid_request("body", "The JSON body is not UTF-8.")
        try:
            document = super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:
            raise ApiError(400, "invalid_json", "The JSON body is nested too deeply.") from None
        if document is not None:
            check_json(document)
        return document


def _is_not_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# --- registration --------------------------------------------------------------------------


def register_middleware(app: Flask) -> None:
    app.request_class = Request

    @app.before_request
    def start_request() -> Response | None:
        g.request_id = _request_id()
        g.started = time.perf_counter()
        logging_setup.clear()
        logging_setup.bind(request_id=g.request_id)
        _check_path()
        _check_query()
        _check_headers()
        if (
            request.method == "OPTIONS"
            and request.url_rule is not None
            and request.routing_exception is None
        ):
            # Answered here, before blueprint hooks (the admin guard needs a verified token,
            # which Flask-JWT-Extended never checks for OPTIONS).
            return app.make_default_options_response()
        return None

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
