"""The OpenAPI document covers every API route and comes from the marshmallow schemas."""

from __future__ import annotations

import re


def test_every_api_route_is_documented(app, client) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or "/docs" in rule.rule or "openapi" in rule.rule:
            continue
        path = re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)


def test_schemas_come_from_marshmallow(client) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    register = schemas["Register"]
    assert register["properties"]["password"]["minLength"] == 8
    assert set(register["required"]) == {"email", "password"}
    job = schemas["Job"]["properties"]
    assert job["status"]["enum"] == [
        "scheduled",
        "queued",
        "running",
        "retrying",
        "succeeded",
        "failed",
        "dead",
        "cancelled",
    ]
    assert job["priority"]["enum"] == ["high", "normal", "low"]
    submit = spec["paths"]["/api/v1/jobs"]["post"]
    assert set(submit["responses"]) >= {"202", "401", "422", "429"}
    assert submit["security"] == [{"bearerAuth": []}]
    assert "security" not in spec["paths"]["/api/v1/auth/login"]["post"]


def test_docs_page_is_served_offline(client) -> None:
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and b"swagger-ui" in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/api/v1/docs/static/swagger-ui-bundle.js").status_code == 200
    assert client.get("/api/v1/docs/static/init.js").status_code == 200
