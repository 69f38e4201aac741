"""The SDK's offline parts: its webhook check accepts exactly what the server's signer
(shared/webhooks/signing.py) produces, its SSE parser, and its error mapping."""

from __future__ import annotations

import ast
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from dockyard_client import (
    AuthenticationError,
    ClientError,
    Conflict,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    ValidationError,
    error_from_response,
    verify_webhook_signature,
)
from dockyard_client.sse import Frame, parse
from shared.webhooks.signing import SIGNATURE_HEADER, signature_header, verify

SECRET = "whsec_current"
BODY = b'{"id":"d1","type":"job.succeeded","created_at":"2026-11-26T20:00:00+00:00","data":{}}'


def test_a_server_signed_body_verifies() -> None:
    headers = {SIGNATURE_HEADER: signature_header([SECRET], BODY)}
    assert verify_webhook_signature(SECRET, headers, BODY)
    assert verify(SECRET, headers, BODY)  # the server's own check agrees


def test_header_names_in_any_case() -> None:
    value = signature_header([SECRET], BODY)
    assert verify_webhook_signature(SECRET, {"dockyard-signature": value}, BODY)
    assert verify_webhook_signature(SECRET, {"DOCKYARD-SIGNATURE": value}, BODY)


def test_both_secrets_verify_during_a_rotation() -> None:
    headers = {SIGNATURE_HEADER: signature_header(["whsec_new", SECRET], BODY)}
    assert headers[SIGNATURE_HEADER].count("v1=") == 2
    assert verify_webhook_signature("whsec_new", headers, BODY)
    assert verify_webhook_signature(SECRET, headers, BODY)
    assert not verify_webhook_signature("whsec_other", headers, BODY)


@pytest.mark.parametrize("body", [BODY + b" ", BODY.replace(b"d1", b"d2"), b"", BODY[:-1]], ids=str)
def test_a_tampered_body_is_refused(body: bytes) -> None:
    headers = {SIGNATURE_HEADER: signature_header([SECRET], BODY)}
    assert not verify_webhook_signature(SECRET, headers, body)


def test_an_old_or_future_timestamp_is_refused() -> None:
    now = int(time.time())
    for stamp, tolerance, valid in [
        (now - 301, 300, False),
        (now + 301, 300, False),
        (now - 200, 300, True),
        (now - 200, 100, False),
    ]:
        headers = {SIGNATURE_HEADER: signature_header([SECRET], BODY, timestamp=stamp)}
        assert verify_webhook_signature(SECRET, headers, BODY, tolerance) is valid
        assert verify(SECRET, headers, BODY, tolerance) is valid


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "v1=abc",
        "t=notanumber,v1=abc",
        "t=1,t=2,v1=abc",
        "t=²,v1=abc",
    ],
)
def test_malformed_headers_are_refused(value: str) -> None:
    assert not verify_webhook_signature(SECRET, {SIGNATURE_HEADER: value}, BODY)
    assert not verify_webhook_signature(SECRET, {}, BODY)


def test_sse_parser_dispatches_whole_events_only() -> None:
    lines = [
        "retry: 2000",
        "",
        ": keep-alive",
        "",
        "id: 7",
        "event: progress",
        'data: {"a":',
        "data: 1}",
        "",
        "event: token_expired",
        'data: {"reason": "token_expired"}',
        "",
        "id: 8",
        "event: succeeded",
        "data: {}",  # no blank line: cut off before it was dispatched
    ]
    assert list(parse(lines)) == [
        Frame("progress", '{"a":\n1}', "7", 2000),
        Frame("token_expired", '{"reason": "token_expired"}', None, 2000),
    ]


def _answer(status: int, body: object = None, text: str = "", **headers: str) -> httpx.Response:
    request = httpx.Request("GET", "http://api.test/api/v1/x")
    if body is not None:
        return httpx.Response(status, json=body, headers=headers, request=request)
    return httpx.Response(status, text=text, headers=headers, request=request)


def test_errors_map_to_one_class_per_status_with_the_api_fields() -> None:
    shape = {
        "error": {
            "code": "validation_error",
            "message": "The request is not valid.",
            "details": {"fields": {"name": ["Missing."]}},
            "request_id": "r1",
        }
    }
    error = error_from_response(_answer(422, shape))
    assert isinstance(error, ValidationError) and isinstance(error, ClientError)
    assert (error.status, error.code, error.request_id) == (422, "validation_error", "r1")
    assert error.details == {"fields": {"name": ["Missing."]}}
    assert str(error) == "validation_error: The request is not valid."
    assert isinstance(error_from_response(_answer(401, shape)), AuthenticationError)
    assert isinstance(error_from_response(_answer(409, shape)), Conflict)
    assert type(error_from_response(_answer(418, shape))) is ClientError
    assert isinstance(error_from_response(_answer(503, shape)), ServiceUnavailable)
    assert type(error_from_response(_answer(502, shape))) is ServerError


def test_non_json_errors_and_retry_after_forms() -> None:
    error = error_from_response(
        _answer(502, text="<html>Bad Gateway</html>", **{"X-Request-ID": "edge-1"})
    )
    assert isinstance(error, ServerError) and error.code == "http_error"
    assert error.message == "<html>Bad Gateway</html>" and error.request_id == "edge-1"
    limited = error_from_response(
        _answer(429, {"error": {"code": "rate_limited"}}, **{"Retry-After": "7"})
    )
    assert isinstance(limited, RateLimited) and limited.retry_after == 7
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    dated = error_from_response(_answer(503, text="busy", **{"Retry-After": later}))
    assert dated.retry_after is not None and 15 <= dated.retry_after <= 20


def test_the_client_imports_nothing_of_the_server() -> None:
    """`pip install ./client` brings httpx, click and rich only: the package must never
    import the server's code or its libraries."""
    package = Path(__file__).resolve().parents[2] / "client" / "dockyard_client"
    server = {"api", "shared", "workers", "flask", "celery", "sqlalchemy", "boto3", "redis"}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in server, f"{path}: imports {name}"
