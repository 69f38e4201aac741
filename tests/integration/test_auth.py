"""Registration, login, refresh, logout/revocation, expiry and tampering."""

from __future__ import annotations

import base64
import json
import uuid

from tests.helpers import PASSWORD, User, api_error, login, register, wait_for


def test_register_returns_the_user_and_hashes_the_password(client) -> None:
    email = f"New-{uuid.uuid4().hex[:8]}@Example.com"
    body = register(client, email)
    assert body["email"] == email.lower()
    assert body["role"] == "user"
    assert set(body) >= {"id", "email", "role"} and "password" not in body
    from sqlalchemy import select

    from shared.db import session_scope
    from shared.models import User as UserRow

    with session_scope() as session:
        stored = session.scalar(select(UserRow).where(UserRow.email == email.lower()))
        assert stored is not None
        assert stored.password_hash.startswith("$argon2id$")
        assert PASSWORD not in stored.password_hash


def test_register_validation_errors(client) -> None:
    bad_email = client.post("/api/v1/auth/register", json={"email": "nope", "password": "x" * 10})
    assert "email" in api_error(bad_email, 422)["details"]["fields"]
    short = client.post(
        "/api/v1/auth/register", json={"email": "a@example.com", "password": "short"}
    )
    assert "password" in api_error(short, 422)["details"]["fields"]
    not_json = client.post("/api/v1/auth/register", data="email=a", content_type="text/plain")
    assert not_json.status_code == 415
    broken = client.post("/api/v1/auth/register", data="{nope", content_type="application/json")
    api_error(broken, 400, "invalid_json")


def test_duplicate_email_is_409_case_insensitively(client) -> None:
    email = f"dup-{uuid.uuid4().hex[:8]}@example.com"
    register(client, email)
    again = client.post(
        "/api/v1/auth/register", json={"email": email.upper(), "password": PASSWORD}
    )
    api_error(again, 409, "email_taken")


def test_login_same_answer_for_unknown_email_and_wrong_password(client) -> None:
    user = register(client)
    wrong = client.post(
        "/api/v1/auth/login", json={"email": user["email"], "password": "nope-nope"}
    )
    unknown = client.post(
        "/api/v1/auth/login", json={"email": "ghost@example.com", "password": "nope-nope"}
    )
    wrong_error = api_error(wrong, 401, "invalid_credentials")
    assert wrong_error["message"] == api_error(unknown, 401, "invalid_credentials")["message"]


def test_login_tokens_and_me(client, settings) -> None:
    user = register(client)
    tokens = login(client, user["email"])
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == settings.jwt_access_token_expires
    me = client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200 and me.get_json()["id"] == user["id"]


def test_missing_tampered_and_wrong_type_tokens_are_401(client) -> None:
    user = User(client)
    api_error(client.get("/api/v1/auth/me"), code="authentication_required")
    header, payload, signature = user.tokens["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    tampered = client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {header}.{forged}.{signature}"}
    )
    api_error(tampered, 401, "invalid_token")
    refresh_as_access = client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {user.tokens['refresh_token']}"}
    )
    assert refresh_as_access.status_code == 401


def test_expired_token_is_401_token_expired(make_app) -> None:
    from datetime import timedelta

    app = make_app()
    app.config["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(seconds=1)
    client = app.test_client()
    user = User(client)
    response = wait_for(
        lambda: (r := client.get("/api/v1/auth/me", headers=user.headers)).status_code == 401 and r,
        timeout=10,
        message="the token to expire",
    )
    api_error(response, code="token_expired")


def refresh(client, refresh_token: str):  # noqa: ANN001
    return client.post("/api/v1/auth/refresh", headers={"Authorization": f"Bearer {refresh_token}"})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_refresh_issues_a_working_access_token(client) -> None:
    user = User(client)
    response = refresh(client, user.tokens["refresh_token"])
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    new_access = body["access_token"]
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {new_access}"})
    assert me.status_code == 200
    # An access token cannot be used to refresh.
    assert client.post("/api/v1/auth/refresh", headers=user.headers).status_code == 401


def test_logout_revokes_access_and_refresh_tokens(client) -> None:
    user = User(client)
    response = user.post(
        "/api/v1/auth/logout", json={"refresh_token": user.tokens["refresh_token"]}
    )
    assert response.status_code == 204
    revoked = user.get("/api/v1/auth/me")
    api_error(revoked, 401, "token_revoked")
    refresh = client.post(
        "/api/v1/auth/refresh", headers={"Authorization": f"Bearer {user.tokens['refresh_token']}"}
    )
    api_error(refresh, 401, "token_revoked")
    # A fresh login still works.
    assert login(client, user.email)["access_token"]


def test_create_admin_cli_promotes_a_user(app, client) -> None:
    user = register(client)
    result = app.test_cli_runner().invoke(args=["create-admin", user["email"]])
    assert result.exit_code == 0, result.output
    assert "promoted" in result.output
    tokens = login(client, user["email"])
    me = client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.get_json()["role"] == "admin"
    email = f"root-{uuid.uuid4().hex[:6]}@example.com"
    created = app.test_cli_runner().invoke(
        args=["create-admin", email], env={"DOCKYARD_ADMIN_PASSWORD": "s3cret-admin-pw"}
    )
    assert created.exit_code == 0 and "created" in created.output
    assert login(client, email, "s3cret-admin-pw")["access_token"]


def test_repeated_wrong_passwords_are_throttled_per_account(make_app) -> None:
    client = make_app(login_max_failures=3).test_client()
    victim, bystander = register(client), register(client)
    for _ in range(3):
        wrong = client.post(
            "/api/v1/auth/login", json={"email": victim["email"], "password": "guess-guess"}
        )
        assert wrong.status_code == 401
    blocked = client.post(
        "/api/v1/auth/login", json={"email": victim["email"], "password": PASSWORD}
    )
    api_error(blocked, 429, "too_many_login_failures")
    assert 1 <= int(blocked.headers["Retry-After"]) <= 900
    assert login(client, bystander["email"])["access_token"]  # other accounts unaffected


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_whole_login(make_app) -> None:
    """A refresh answers a new refresh token and spends the old one. Presenting the spent
    one again (a stolen copy, or the thief's own copy used after the owner's) revokes every
    token of that login: both refresh tokens and the access tokens, even on another API
    process (a second app: the revocations are in Redis). Another login is unaffected."""
    first, second = make_app().test_client(), make_app().test_client()
    user = User(first)
    other_login = login(first, user.email)
    rotated = refresh(first, user.tokens["refresh_token"])
    assert rotated.status_code == 200
    new = rotated.get_json()
    assert new["refresh_token"] != user.tokens["refresh_token"]
    assert first.get("/api/v1/auth/me", headers=bearer(new["access_token"])).status_code == 200
    # The rotated token works once; the old access token still works until reuse.
    assert first.get("/api/v1/auth/me", headers=user.headers).status_code == 200

    reused = refresh(second, user.tokens["refresh_token"])
    assert api_error(reused, 401, "token_revoked")["details"] == {"reason": "refresh_token_reused"}
    for client in (first, second):
        for token in (new["access_token"], user.tokens["access_token"]):
            me = client.get("/api/v1/auth/me", headers=bearer(token))
            api_error(me, 401, "token_revoked")
        api_error(refresh(client, new["refresh_token"]), code="token_revoked")
    # The same user's other login is its own family.
    assert refresh(first, other_login["refresh_token"]).status_code == 200


def test_concurrent_refreshes_with_one_token_cannot_both_win(app) -> None:
    """Two refreshes racing with one token: exactly one is answered with new tokens."""
    import threading

    user = User(app.test_client())
    barrier, statuses = threading.Barrier(4), []

    def attempt() -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(refresh(client, user.tokens["refresh_token"]).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 401, 401, 401]


def test_refresh_reads_the_role_from_the_database(app, client) -> None:
    """A promoted user's refresh carries admin; a demoted admin's carries user; a deleted
    user's refresh is refused."""
    from sqlalchemy import delete, update

    from api.cli import ensure_admin
    from shared.db import session_scope
    from shared.models import User as UserRow

    user = User(client)
    ensure_admin(user.email, None)
    assert client.get("/api/v1/admin/stats", headers=user.headers).status_code == 403
    promoted = refresh(client, user.tokens["refresh_token"]).get_json()
    assert (
        client.get("/api/v1/auth/me", headers=bearer(promoted["access_token"])).status_code == 200
    )
    assert (
        client.get("/api/v1/admin/stats", headers=bearer(promoted["access_token"])).status_code
        == 200
    )
    with session_scope() as session:
        session.execute(update(UserRow).where(UserRow.email == user.email).values(role="user"))
    demoted = refresh(client, promoted["refresh_token"]).get_json()
    stats = client.get("/api/v1/admin/stats", headers=bearer(demoted["access_token"]))
    assert stats.status_code == 403
    with session_scope() as session:
        session.execute(delete(UserRow).where(UserRow.email == user.email))
    gone = refresh(client, demoted["refresh_token"])
    api_error(gone, 401, "invalid_token")


def test_logout_ends_the_whole_login(client) -> None:
    """Logging out with the access token alone also ends the refresh token of that login
    (and any access token it was refreshed into); another login is unaffected."""
    user = User(client)
    other = login(client, user.email)
    refreshed = refresh(client, user.tokens["refresh_token"]).get_json()
    assert user.post("/api/v1/auth/logout").status_code == 204
    api_error(refresh(client, refreshed["refresh_token"]), code="token_revoked")
    me = client.get("/api/v1/auth/me", headers=bearer(refreshed["access_token"]))
    assert me.status_code == 401
    assert client.get("/api/v1/auth/me", headers=bearer(other["access_token"])).status_code == 200
