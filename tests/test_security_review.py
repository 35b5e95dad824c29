"""Regression tests from the security review of the fixes (reserved names, gateway limits, auth):
each one was a way around a fix, found on a real gateway (uvicorn, as ``herald serve`` runs it)
on a real server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect

import herald
from herald import EmbeddedServer
from herald._server import secure_dir
from herald.gateway import AuthConfig, GatewayConfig
from herald.gateway.serve import BackgroundGateway, gateway_config

KEY = "k" * 64
NOBODY = 65534
HERALD = [sys.executable, "-m", "herald.cli"]
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


# -- M5 / max_subscriptions: one resume per name ---------------------------------------------------


async def _subscriptions(hub: herald.AsyncClient, channel: str) -> int:
    reply = await hub.execute("PUBSUB", "NUMSUB", channel)
    return int(reply[1])


async def test_a_name_repeated_in_one_resume_leaks_no_subscription(url: str, topic: str) -> None:
    """``{"op": "subscribe", "topics": [t, t, ...], "since": 0}`` made one subscription of its
    own per repetition and kept only the last: the others were never closed (not by
    ``unsubscribe``, not when the connection closed), past ``max_subscriptions``."""
    rec = f"rec.{topic}"
    async with herald.AsyncClient(url) as hub:
        await hub.declare(rec, history=10)
        await hub.publish(rec, 1, confirm=True)
        before = await _subscriptions(hub, rec)
        with BackgroundGateway(url, GatewayConfig()) as gw:
            async with connect(gw.ws_url) as ws:
                await ws.send(
                    json.dumps({"op": "subscribe", "topics": [rec] * 20, "since": 0, "id": 1})
                )
                frames: list[dict[str, Any]] = []
                while not any(f.get("type") == "subscribed" for f in frames):
                    raw = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    frames += raw if isinstance(raw, list) else [raw]
                # One subscription of its own, whatever the repetitions.
                assert len(gw.app.state.gateway.fanout._own) == 1
            for _ in range(100):  # the gateway closes them after the connection, not with it
                if await _subscriptions(hub, rec) == before:
                    break
                await asyncio.sleep(0.05)
            assert await _subscriptions(hub, rec) == before
            assert not gw.app.state.gateway.fanout._own


# -- L8: short HMAC keys -----------------------------------------------------------------------


def _oct_jwks(secret: bytes) -> dict[str, Any]:
    k = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    return {"keys": [{"kty": "oct", "k": k, "alg": "HS256", "kid": "a"}]}


def test_a_jwks_with_a_short_hmac_key_is_refused() -> None:
    """A short HMAC key was refused as ``--auth-key-file`` but accepted in a JWKS (``kty``
    ``oct``): a 5-byte key signed admin tokens."""
    with pytest.raises(ValueError, match="at least 32 bytes"):
        AuthConfig(
            key=jwt.PyJWKSet.from_dict(_oct_jwks(b"short")),
            audience="herald",
            issuer="tests",
        )
    AuthConfig(key=jwt.PyJWKSet.from_dict(_oct_jwks(b"s" * 32)), audience="herald", issuer="t")


def test_a_jwks_holding_hmac_secrets_must_be_private(tmp_path: Path) -> None:
    """A JWKS of public keys may be readable by all; one with HMAC secrets (``oct``) may not,
    as the key file may not: whoever reads it signs tokens."""
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(_oct_jwks(b"s" * 32)))
    path.chmod(0o644)
    with pytest.raises(ValueError, match="readable by other users"):
        gateway_config(host="127.0.0.1", auth_jwks_file=path, auth_issuer="tests")
    path.chmod(0o600)
    assert gateway_config(host="127.0.0.1", auth_jwks_file=path, auth_issuer="tests").auth


# -- M6 / H1: dead letters are the admin's ----------------------------------------------------


async def test_history_grant_does_not_read_dead_letters_and_their_exception_text(
    url: str, topic: str
) -> None:
    """``GET /topics/{topic}/dead`` needs ``admin``; ``GET /topics/{topic}.dead/messages`` with
    a ``history`` grant on ``{topic}.*`` read the same entries, with the ``herald-reason`` that
    holds the consumer's exception text (here, a password), its group and consumer names."""
    secret = "postgres://admin:hunter2@db"
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)

        def fail(msg: herald.Message) -> None:
            raise RuntimeError(f"cannot reach {secret}")

        consumer = await hub.consume(topic, "billing", handler=fail, max_deliver=1)
        await hub.publish(topic, {"order": 1})
        for _ in range(200):
            if await hub.dead_letters(topic):
                break
            await asyncio.sleep(0.05)
        await consumer.close()
        assert secret in (await hub.dead_letters(topic))[0].reason
    with BackgroundGateway(url, GatewayConfig(auth=AUTH)) as gw:
        reader = bearer(history=[f"{topic}*"], subscribe=[f"{topic}*"])
        async with httpx.AsyncClient(base_url=gw.url) as api:
            r = await api.get(f"/topics/{topic}/dead", headers=reader)
            assert r.status_code == 403
            r = await api.get(f"/topics/{topic}.dead/messages", headers=reader)
            assert r.status_code == 403, r.text
            assert secret not in r.text
            # The topic's own history is still the reader's.
            r = await api.get(f"/topics/{topic}/messages", headers=reader)
            assert r.status_code == 200
            assert r.json()["messages"]
            # An admin reads them, either way.
            admin = bearer(history=[f"{topic}*"], admin=True)
            r = await api.get(f"/topics/{topic}.dead/messages", headers=admin)
            assert r.status_code == 200
            assert secret in r.text
            # The dead letters outlive their topic: still the admin's.
            async with herald.AsyncClient(url) as hub:
                await hub.delete_topic(topic)
            r = await api.get(f"/topics/{topic}.dead/messages", headers=reader)
            assert r.status_code == 403, r.text


# -- M1 / L3: the data directory's path ------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a link to another user")
def test_a_data_dir_others_can_swap_is_refused(tmp_path: Path) -> None:
    """``secure_dir`` checked the directory a path leads to, not the path: a link that another
    user planted in /tmp (``HERALD_HOME=/tmp/herald``), or a directory in one that others may
    write to, can be switched to the other user's directory between the check and the server's
    start, which then reads the other user's ``valkey.conf`` (``loadmodule``: their code, run
    as this user). Both are refused; a directory of one's own in /tmp is not."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    planted = shared / "herald"
    planted.symlink_to(mine)
    os.lchown(planted, NOBODY, NOBODY)
    with pytest.raises(herald.ConfigurationError, match="link"):
        secure_dir(planted)
    with pytest.raises(herald.ConfigurationError, match="link"):
        EmbeddedServer(data_dir=planted).start()
    with pytest.raises(herald.ConfigurationError, match="link"):
        secure_dir(planted / "herald")  # a link on the way, not only at the end
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # no sticky bit: anyone may rename what is in it
    with pytest.raises(herald.ConfigurationError, match="others may"):
        secure_dir(open_dir / "herald")
    secure_dir(shared / "own")  # created here, and only its owner may rename it
    own_link = shared / "own-link"
    own_link.symlink_to(mine)
    secure_dir(own_link)


# -- H1: ways around the inbox namespace that hold (kept as regressions) ------------------------


async def test_gateway_clients_reach_no_inbox_by_patterns_or_encodings(
    url: str, topic: str
) -> None:
    """Patterns that cover the inboxes without naming the namespace, escapes, and encoded
    paths: refused, or subscribed without ever receiving a reply."""
    covering = ["_herald*", "*inbox*", "[_]herald.*", "\\_herald.inbox.*", "?herald.inbox.*", "*"]
    with BackgroundGateway(url, GatewayConfig(auth=AUTH)) as gw:
        auth = bearer(publish=["*"], subscribe=["*"])
        async with httpx.AsyncClient(base_url=gw.url, headers=auth) as api:
            for path in ("_herald%2Einbox.x", "_herald%2einbox%2Ex", "_herald.inbox"):
                r = await api.post(f"/topics/{path}", json=1)
                assert r.status_code == 403, path
        async with (
            connect(gw.ws_url, additional_headers=auth) as ws,
            herald.AsyncClient(url) as caller,
            herald.AsyncClient(url) as responder,
        ):
            await ws.send(json.dumps({"op": "subscribe", "topics": covering, "id": 1}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            await responder.subscribe(f"rpc.{topic}", handler=lambda m: {"secret": 42})
            reply = await caller.request(f"rpc.{topic}", {"q": 1}, timeout=5)
            assert reply.data == {"secret": 42}
            frames: list[dict[str, Any]] = []
            try:
                while True:
                    raw = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    frames += raw if isinstance(raw, list) else [raw]
            except TimeoutError:
                pass
            topics = {f.get("topic") for f in frames if f.get("type") == "message"}
            assert topics == {f"rpc.{topic}"}  # the request itself, on its topic; no reply


# -- a publisher drives the operator's terminal ----------------------------------------------


def test_herald_sub_shows_escape_sequences_and_markup_instead_of_running_them(
    url: str, topic: str
) -> None:
    """``herald sub`` printed payloads as rich markup, control characters included: any
    publisher (a gateway client with a publish grant) set the terminal's title, cleared it,
    wrote links (``[link=...]``) or a new line that passed for another message."""
    payload = "\x1b]0;pwned\x1b\\ [link=https://evil.example]click[/link]\x1b[2J\nfake 1"
    sub = subprocess.Popen(
        [*HERALD, "sub", topic, "--count", "1", "--timeout", "15", "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "500"},
    )
    try:
        with herald.Client(url) as hub:
            deadline = time.monotonic() + 10
            while hub.execute("PUBSUB", "NUMSUB", topic)[1] == 0:
                assert time.monotonic() < deadline, "herald sub did not subscribe"
                time.sleep(0.02)
            hub.publish(topic, payload, headers={"note": "[link=https://evil.example]x[/link]"})
        out, err = sub.communicate(timeout=15)
    finally:
        sub.kill()
    assert sub.returncode == 0, err
    assert "\x1b" not in out
    assert "\\x1b]0;pwned" in out
    assert "[link=https://evil.example]click[/link]" in out
    assert "[link=https://evil.example]x[/link]" in out
    assert "fake 1" in out
    assert len([line for line in out.splitlines() if topic in line]) == 1


# -- M5: publish rates of a token without ``sub`` ------------------------------------------------


async def test_a_token_without_sub_does_not_buy_publishes_with_more_connections(url: str) -> None:
    """Publishes count per token subject across all connections; a token without ``sub`` had
    no such bucket, only one per WebSocket connection: each new connection was a full burst."""
    claims = {"aud": "herald", "iss": "tests", "exp": int(time.time() + 300)}
    claims["herald"] = {"publish": ["rate.*"]}
    auth = {"authorization": f"Bearer {jwt.encode(claims, KEY, algorithm='HS256')}"}
    config = GatewayConfig(auth=AUTH, publish_rate=0.01, publish_burst=2)
    with BackgroundGateway(url, config) as gw:
        answers = []
        for i in range(4):
            async with connect(gw.ws_url, additional_headers=auth) as ws:
                await ws.send(json.dumps({"op": "publish", "topic": "rate.x", "data": i, "id": i}))
                answers.append(json.loads(await ws.recv()))
        async with httpx.AsyncClient(base_url=gw.url, headers=auth) as api:
            answers.append({"http": (await api.post("/topics/rate.x", json=1)).status_code})
    assert [a.get("type") for a in answers[:2]] == ["ack", "ack"]
    assert [a.get("code") for a in answers[2:4]] == ["rate_limited"] * 2, answers
    assert answers[4] == {"http": 429}
