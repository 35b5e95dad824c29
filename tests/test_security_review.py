"""Regression tests from the security review of the fixes (reserved names, gateway limits, auth):
each one was a way around a fix, found on a real gateway (uvicorn, as ``herald serve`` runs it)
on a real server.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt

from herald.gateway import AuthConfig, GatewayConfig
from herald.gateway.serve import BackgroundGateway

KEY = "k" * 64
AUTH = AuthConfig(key=KEY, audience="herald", issuer="tests", leeway=0)


def bearer(**grants: Any) -> dict[str, str]:
    claims = {"sub": "mallory", "aud": "herald", "iss": "tests", "exp": int(time.time() + 300)}
    claims["herald"] = grants
    return {"authorization": f"Bearer {jwt.encode(claims, KEY, algorithm='HS256')}"}


# -- M5: publish rates per client address --------------------------------------------------------


def test_x_forwarded_for_does_not_buy_an_anonymous_client_more_publishes(
    url: str, topic: str
) -> None:
    """Without auth, HTTP publishes are limited per client address. uvicorn trusts
    ``X-Forwarded-For`` from 127.0.0.1 by default, and every local user connects from there:
    a new made-up address per request was a new, full bucket."""
    config = GatewayConfig(publish_rate=0.01, publish_burst=2)
    with BackgroundGateway(url, config) as gw, httpx.Client(base_url=gw.url) as api:
        codes = [
            api.post(
                f"/topics/{topic}",
                content=b"x",
                headers={"x-forwarded-for": f"10.0.0.{i}"},
            ).status_code
            for i in range(6)
        ]
    assert codes[:2] == [200, 200]
    assert codes[2:] == [429] * 4, codes
