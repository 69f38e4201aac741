"""A bench user of the platform's HTTP API."""

from __future__ import annotations

import uuid

import requests


def token(base: str) -> str:
    email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
    password = "bench password 123"
    requests.post(
        f"{base}/api/v1/auth/register", json={"email": email, "password": password}, timeout=10
    ).raise_for_status()
    response = requests.post(
        f"{base}/api/v1/auth/login", json={"email": email, "password": password}, timeout=10
    )
    response.raise_for_status()
    return response.json()["access_token"]
