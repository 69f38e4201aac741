"""Input the database cannot store, OPTIONS/HEAD on every route, and database errors: always
a 4xx in the standard error shape (never a 500), and no bound values in the logs.

Real PostgreSQL and Redis behind the app: without the checks, a NUL reached PostgreSQL and
answered 500 with the statement's parameters in the log.
"""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
from sqlalchemy import text

from shared import logging_setup
from tests.helpers import User, api_error

JOBS = "/api/v1/jobs"


def raw_json(user: User, path: str, payload: bytes):  # noqa: ANN201
    return user.post(path, data=payload, content_type="application/json")


@pytest.fixture()
def user(client) -> User:  # noqa: ANN001
    return User(client)


# --- JSON bodies ---------------------------------------------------------------------------


def test_a_nul_in_a_job_parameter_is_invalid_params_and_nothing_is_stored(user: User) -> None:
    response = user.post(JOBS, json={"processor": "debug.echo", "params": {"message": "a\x00b"}})
    error = api_error(response, 422, "invalid_params")
    assert error["details"]["fields"] == {
        "params.message": ["Must be UTF-8 text without NUL characters."]
    }
    assert user.get(JOBS).get_json()["items"] == []


def test_a_nul_in_the_login_email_is_invalid_params(client) -> None:  # noqa: ANN001
    response = client.post("/api/v1/auth/login", json={"email": "a\x00@b.c", "password": "x"})
    assert api_error(response, 422, "invalid_params")["details"]["fields"].keys() == {"email"}
    response = client.post(
        "/api/v1/auth/register", json={"email": "a@b.c", "password": "long enough\x00"}
    )
    api_error(response, 422, "invalid_params")


def test_a_lone_surrogate_escape_is_invalid_params(user: User) -> None:
    body = b'{"processor": "debug.echo", "params": {"message": "\\ud800"}}'
    api_error(raw_json(user, JOBS, body), 422, "invalid_params")


def test_a_nul_in_a_key_or_an_undeclared_field_is_invalid_request(user: User) -> None:
    key = user.post(JOBS, json={"processor": "debug.echo", "params": {"a\x00": "x"}})
    assert api_error(key, 422, "invalid_request")["details"]["location"] == "body"
    extra = user.post(JOBS, json={"processor": "debug.echo", "note": "\x00"})
    api_error(extra, 422, "invalid_request")


def test_a_body_that_is_not_utf8_is_invalid_request(user: User) -> None:
    body = b'{"processor": "debug.echo", "params": {"message": "\xff"}}'
    assert api_error(raw_json(user, JOBS, body), 422, "invalid_request")["details"] == {
        "location": "body"
    }


def test_non_finite_numbers_are_invalid_params(user: User) -> None:
    body = b'{"processor": "debug.echo", "params": {"message": "x", "n": NaN}}'
    error = api_error(raw_json(user, JOBS, body), 422, "invalid_params")
    assert error["details"]["fields"] == {"params.n": ["Must be a finite number."]}


def test_a_deeply_nested_body_is_invalid_json(user: User) -> None:
    body = b'{"processor": "debug.echo", "params": {"m": ' + b"[" * 100_000 + b"]" * 100_000
    api_error(raw_json(user, JOBS, body + b"}}"), 400, "invalid_json")


# --- query, headers, path ------------------------------------------------------------------


def test_query_values_and_names(user: User) -> None:
    known = user.get(JOBS + "?status=%00")
    assert api_error(known, 422, "invalid_params")["details"]["fields"] == {
        "status": ["Must be UTF-8 text without NUL characters."]
    }
    api_error(user.get(JOBS + "?status=%ff"), 422, "invalid_params")
    unknown = user.get(JOBS + "?other=%ff")
    assert api_error(unknown, 422, "invalid_request")["details"] == {"location": "query"}
    api_error(user.get(JOBS + "?%00=1"), 422, "invalid_request")


def test_headers(user: User) -> None:
    for value in ("a\x00b", "\xff\xfe"):  # WSGI carries header bytes as latin-1 text
        response = user.get(JOBS, headers={"X-Anything": value})
        assert api_error(response, 422, "invalid_request")["details"] == {
            "location": "header",
            "name": "X-Anything",
        }
    response = user.post(
        JOBS, json={"processor": "debug.echo"}, headers={"Idempotency-Key": "k\x00"}
    )
    api_error(response, 422, "invalid_request")


def test_the_path(user: User) -> None:
    for path in (JOBS + "/%00", "/api/v1/files/a%00b"):
        response = user.get(path)
        assert api_error(response, 422, "invalid_request")["details"] == {"location": "path"}
    # A WSGI server passes the path's bytes as latin-1 text (the test client cannot send %ff).
    response = user.get("/", environ_overrides={"PATH_INFO": JOBS + "/\xff/events"})
    assert api_error(response, 422, "invalid_request")["details"] == {"location": "path"}


# --- multipart -----------------------------------------------------------------------------


def multipart(user: User, *parts: tuple[bytes, bytes]):  # noqa: ANN201
    """POST /jobs/files with hand-made parts: (Content-Disposition parameters, value)."""
    body = b"".join(
        b"--XyZ\r\nContent-Disposition: form-data; " + head + b"\r\n\r\n" + value + b"\r\n"
        for head, value in parts
    )
    return user.post(
        JOBS + "/files",
        data=body + b"--XyZ--\r\n",
        content_type="multipart/form-data; boundary=XyZ",
    )


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def test_multipart_values_of_declared_fields_are_invalid_params(user: User) -> None:
    for value in (b"file.checksum\x00", b"file.checksum\xff"):
        response = multipart(user, (b'name="processor"', value))
        assert api_error(response, 422, "invalid_params")["details"]["fields"] == {
            "processor": ["Must be UTF-8 text without NUL characters."]
        }
    response = user.upload("file.checksum", b"data", params={"algorithm": "sha256\x00"})
    error = api_error(response, 422, "invalid_params")
    assert list(error["details"]["fields"]) == ["params.algorithm"]


def test_multipart_params_nested_too_deeply_are_invalid_params(user: User) -> None:
    """json.loads raised RecursionError (not a ValueError) on the form's params: a 500."""
    response = multipart(
        user,
        (b'name="processor"', b"file.checksum"),
        (b'name="params"', b"[" * 100_000),
        (b'name="file"; filename="a.txt"', b"hello"),
    )
    assert api_error(response, 422, "invalid_params")["details"]["fields"] == {
        "params": ["Not a JSON object."]
    }


def test_multipart_names_and_file_names_are_invalid_request(user: User) -> None:
    cases = [
        [(b'name="proc\xffessor"', b"file.checksum")],
        [(b'name="proc\x00essor"', b"file.checksum")],
        [(b'name="processor"', b"file.checksum"), (b'name="note"', b"\x00")],
        [(b'name="processor"', b"file.checksum"), (b'name="file"; filename="a\x00.png"', PNG)],
        [(b'name="processor"', b"file.checksum"), (b'name="file"; filename="a\xff.png"', PNG)],
    ]
    for parts in cases:
        response = multipart(user, *parts)
        assert api_error(response, 422, "invalid_request")["details"]["location"] == "form"
    assert user.get(JOBS).get_json()["items"] == []


def test_a_clean_upload_still_works(user: User, s3_server) -> None:  # noqa: ANN001
    response = user.post(
        JOBS + "/files",
        data={"processor": "file.checksum", "file": (io.BytesIO(b"hello"), "héllo.txt")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.get_json()


def test_a_non_ascii_download_signature_is_refused(make_app, tmp_path) -> None:  # noqa: ANN001
    """hmac.compare_digest raised TypeError on a non-ASCII str: a 500."""
    client = make_app(storage_backend="local", storage_local_root=str(tmp_path)).test_client()
    response = client.get(
        "/api/v1/files/users/a/b.txt?filename=b.txt&expires=9999999999&signature=%C3%A9"
    )
    api_error(response, 403, "invalid_download_url")


def test_a_utc_offset_postgresql_refuses_is_a_validation_error(client) -> None:  # noqa: ANN001
    admin = User(client, role="admin")
    response = admin.get("/api/v1/admin/dead-letters?since=2000-01-01T00:00:00%2B23:00")
    error = api_error(response, 422, "validation_error")
    assert list(error["details"]["fields"]) == ["since"]


def test_a_deleted_accounts_token_cannot_submit(client) -> None:  # noqa: ANN001
    """The token outlives its account; the job's foreign key refused it with a 500."""
    from shared.db import session_scope

    user = User(client)
    with session_scope() as session:
        session.execute(text("DELETE FROM users WHERE id = :id"), {"id": user.profile["id"]})
    response = user.post(JOBS, json={"processor": "debug.echo", "params": {"message": "x"}})
    api_error(response, 409, "conflict")


def test_a_last_event_id_int_refuses_is_invalid(user: User) -> None:
    """ "²" passed str.isdigit() and failed int(): a 500."""
    for value in ("%C2%B2", "%D9%A1", "9" * 19):
        response = user.get(f"{JOBS}/stream?last_event_id={value}")
        api_error(response, 422, "invalid_last_event_id")


def test_an_unreachable_broker_is_a_503_not_a_500(make_app) -> None:  # noqa: ANN001
    """GET /admin/stats reads queue depths from the broker; unreachable, it answered 500."""
    client = make_app(broker_url="redis://127.0.0.1:1/0").test_client()
    admin = User(client, role="admin")
    error = api_error(admin.get("/api/v1/admin/stats"), 503, "service_unavailable")
    assert error["details"] == {"component": "redis"}


def test_a_forged_cursor_is_a_validation_error(user: User) -> None:
    """A cursor whose id was not a string reached uuid.UUID(5) (AttributeError): a 500."""
    import base64

    for fields in (["2020-01-01T00:00:00+00:00", 5], [1, "0" * 32], ["x", None]):
        cursor = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
        error = api_error(user.get(f"{JOBS}?cursor={cursor}"), 422, "validation_error")
        assert list(error["details"]["fields"]) == ["cursor"]


def test_a_repo_url_urlsplit_refuses_is_invalid(user: User) -> None:
    """urlsplit raises ValueError on an unbalanced "[" (an IPv6 host): it answered 500."""
    response = user.post(JOBS + "/deploy", json={"repo_url": "https://[github.com/a/b"})
    api_error(response, 422, "invalid_repo_url")


# --- OPTIONS and HEAD ----------------------------------------------------------------------


def test_options_and_head_work_on_every_route(app, client) -> None:  # noqa: ANN001
    admin = User(client, role="admin")
    plain = User(client)
    for rule in app.url_map.iter_rules():
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<uuid:{name}>", str(uuid.uuid4()))
            path = path.replace(f"<path:{name}>", "a/b").replace(f"<{name}>", "x")
        for headers in ({}, plain.headers, admin.headers):
            options = client.options(path, headers=headers)
            assert options.status_code == 200, (path, options.status_code)
            assert set(options.headers["Allow"].split(", ")) >= {"OPTIONS"} | (
                rule.methods - {"OPTIONS"}
            )
            if "GET" in rule.methods and not path.endswith("stream"):
                head = client.head(path, headers=headers)
                assert head.status_code < 500, (path, head.status_code)
                assert head.data == b""
    assert client.head("/api/v1/jobs", headers=plain.headers).status_code == 200
    assert client.head("/api/v1/admin/stats", headers=plain.headers).status_code == 403
    assert client.head("/api/v1/admin/stats", headers=admin.headers).status_code == 200
    api_error(client.options("/api/v1/no-such-route"), 404, "not_found")


# --- database errors -----------------------------------------------------------------------

SECRET = "s3cr3t-bound-value-7f1c"


def test_database_errors_answer_without_values_in_the_logs(make_app, caplog) -> None:  # noqa: ANN001
    """A DataError is the request's fault (422); any other database error is a 500 with a
    generic message and the request id; neither logs the bound values or PostgreSQL's
    message quoting them."""
    import celeryconfig
    from api.session import db_session
    from shared.db import get_engine

    assert get_engine().hide_parameters is True
    assert celeryconfig.database_engine_options["hide_parameters"] is True
    app = make_app()

    def data_error() -> str:
        db_session().execute(text("SELECT CAST(:value AS integer)"), {"value": SECRET})
        return "unreachable"

    def nul_literal() -> str:  # psycopg2 refuses it with a plain ValueError, before sending
        db_session().execute(text("SELECT CAST(:value AS text)"), {"value": "a\x00b"})
        return "unreachable"

    def other_error() -> str:
        db_session().execute(text("SELECT no_such_column, :value"), {"value": SECRET})
        return "unreachable"

    app.add_url_rule("/test/data-error", view_func=data_error)
    app.add_url_rule("/test/other-error", view_func=other_error)
    app.add_url_rule("/test/nul-literal", view_func=nul_literal)
    client = app.test_client()
    formatter = logging_setup.JsonFormatter("api")
    with caplog.at_level(logging.INFO):
        api_error(client.get("/test/data-error"), 422, "invalid_request")
        api_error(client.get("/test/nul-literal"), 422, "invalid_request")
        error = api_error(client.get("/test/other-error"), 500, "internal_error")
    assert error["message"] == "An internal error occurred."
    assert SECRET not in json.dumps(error)
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    assert "InvalidTextRepresentation" in logged and "UndefinedColumn" in logged  # logged
    assert SECRET not in logged
