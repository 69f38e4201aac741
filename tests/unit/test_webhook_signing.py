"""The signature recipe: shared/webhooks/signing.py signs, and both its `verify` and the
receiver example of docs/webhooks.md (run as printed, between its markers) accept exactly
what it signs: a wrong secret, a changed body or an old timestamp is refused."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.webhooks.signing import SIGNATURE_HEADER, signature_header, verify

PAGE = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
SECRET = "whsec_current"
BODY = b'{"id":"d1","type":"job.succeeded","created_at":"2026-11-26T20:00:00+00:00","data":{}}'

Verifier = Callable[[str, str, bytes], bool]


def page_verify() -> Verifier:
    """The docs page's `verify(secret, header, body)`, executed from its own text."""
    text = PAGE.read_text()
    block = re.search(
        r"<!-- webhook-verify:start -->\n```python\n(.*?)```\n<!-- webhook-verify:end -->",
        text,
        re.DOTALL,
    )
    assert block, "docs/webhooks.md's verification example (between its markers) is missing"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 11, "the example should stay about 10 lines"
    namespace: dict[str, object] = {}
    exec(compile(code, str(PAGE), "exec"), namespace)  # noqa: S102 (our own docs page)
    function = namespace["verify"]
    assert callable(function)
    return function  # type: ignore[return-value]


def shared_verify(secret: str, header: str, body: bytes) -> bool:
    return verify(secret, {SIGNATURE_HEADER: header}, body)


VERIFIERS = {"docs": page_verify(), "shared": shared_verify}


@pytest.fixture(params=sorted(VERIFIERS))
def check(request: pytest.FixtureRequest) -> Verifier:
    return VERIFIERS[request.param]


def test_a_signed_body_verifies(check: Verifier) -> None:
    assert check(SECRET, signature_header([SECRET], BODY), BODY)


def test_both_secrets_verify_during_a_rotation(check: Verifier) -> None:
    header = signature_header(["whsec_new", SECRET], BODY)
    assert header.count("v1=") == 2
    assert check("whsec_new", header, BODY)
    assert check(SECRET, header, BODY)
    assert not check("whsec_other", header, BODY)


def test_a_wrong_secret_is_refused(check: Verifier) -> None:
    assert not check("whsec_wrong", signature_header([SECRET], BODY), BODY)


def test_a_tampered_body_is_refused(check: Verifier) -> None:
    header = signature_header([SECRET], BODY)
    assert not check(SECRET, header, BODY.replace(b"succeeded", b"failed"))
    assert not check(SECRET, header, BODY + b" ")


def test_an_old_or_future_timestamp_is_refused(check: Verifier) -> None:
    assert check(SECRET, signature_header([SECRET], BODY, int(time.time()) - 200), BODY)
    assert not check(SECRET, signature_header([SECRET], BODY, int(time.time()) - 400), BODY)
    assert not check(SECRET, signature_header([SECRET], BODY, int(time.time()) + 400), BODY)


def test_a_changed_timestamp_is_refused(check: Verifier) -> None:
    """The timestamp is signed: moving it forward (a replay made to look fresh) fails."""
    header = signature_header([SECRET], BODY, int(time.time()) - 1000)
    fresh = re.sub(r"t=\d+", f"t={int(time.time())}", header)
    assert not check(SECRET, fresh, BODY)


@pytest.mark.parametrize(
    "header",
    ["", "v1=abc", "t=,v1=abc", "t=abc,v1=abc", "t=1,t=2,v1=abc", "garbage"],
)
def test_malformed_headers_are_refused(check: Verifier, header: str) -> None:
    assert not check(SECRET, header, BODY)


def test_the_header_is_the_documented_format() -> None:
    header = signature_header(["s"], b"{}", 1700000000)
    assert re.fullmatch(r"t=1700000000,v1=[0-9a-f]{64}", header)
