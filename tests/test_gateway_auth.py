"""Gateway auth: the refusal matrix for JWTs, per-topic grants, origins, token expiry."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close

import herald
from herald.gateway import AuthConfig, GatewayConfig, create_app
from herald.gateway.auth import covers
from herald.gateway.serve import BackgroundGateway
from herald.gateway.state import Gateway

KEY = "k" * 64
AUTH = AuthConfig(key=KEY, audience="herald", issuer="tests", leeway=0)
GRANTS = {"publish": ["chat.*"], "subscribe": ["chat.*"], "history": [], "admin": False}


def token(
    *,
    key: str = KEY,
    algorithm: str = "HS256",
    exp: float | None = 3600,  # tokens made at import: valid for the whole suite
    aud: str = "herald",
    iss: str = "tests",
    grants: dict[str, Any] | None = None,
) -> str:
    claims: dict[str, Any] = {"sub": "alice", "aud": aud, "iss": iss, "herald": grants or GRANTS}
    if exp is not None:
        claims["exp"] = int(time.time() + exp)
    if algorithm == "none":
        return jwt.encode(claims, "", algorithm="none")  # the none algorithm takes no key
    return jwt.encode(claims, key, algorithm=algorithm)


@pytest.fixture
async def api(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with herald.AsyncClient(url) as hub:
        app = create_app(hub, GatewayConfig(auth=AUTH))
        gw: Gateway = app.state.gateway
        await gw.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield client
        await gw.stop()


REFUSED = {
    "no token": (None, 401),
    "alg none": (token(algorithm="none"), 401),
    "wrong alg": (token(algorithm="HS512"), 401),
    "wrong key": (token(key="x" * 64), 401),
    "expired": (token(exp=-60), 401),
    "no exp": (token(exp=None), 401),
    "wrong audience": (token(aud="other"), 401),
    "wrong issuer": (token(iss="other"), 401),
    "garbage": ("not.a.jwt", 401),
    "wrong topic grant": (token(grants={"publish": ["news.*"]}), 403),
    "subscribe grant only": (token(grants={"subscribe": ["chat.*"]}), 403),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_publish_is_refused(api: httpx.AsyncClient, case: str) -> None:
    bearer, status = REFUSED[case]
    headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    r = await api.post("/topics/chat.room", json={"hi": 1}, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"] in ("unauthorized", "forbidden")


async def test_granted_requests_pass_and_admin_is_separate(api: httpx.AsyncClient) -> None:
    headers = {"authorization": f"Bearer {token()}"}
    r = await api.post("/topics/chat.room", json={"hi": 1}, headers=headers)
    assert r.status_code == 200, r.text
    assert (await api.get("/stats", headers=headers)).status_code == 403
    admin = {"authorization": f"Bearer {token(grants={'admin': True})}"}
    assert (await api.get("/stats", headers=admin)).status_code == 200
    assert (await api.get("/stats")).status_code == 401
    # History needs its own grant.
    assert (await api.get("/topics/chat.room/messages", headers=headers)).status_code == 403
    # Health, readiness and the dashboard page stay open; metrics name topics: admin only.
    for path in ("/healthz", "/readyz", "/", "/openapi.json"):
        assert (await api.get(path)).status_code == 200, path
    assert (await api.get("/metrics")).status_code == 401
    assert (await api.get("/metrics", headers=headers)).status_code == 403
    assert (await api.get("/metrics", headers=admin)).status_code == 200


def test_grants_cover_topics_and_only_narrower_patterns() -> None:
    assert covers(["chat.*"], "chat.room")
    assert not covers(["chat.*"], "news.room")
    assert covers(["chat.*"], "chat.*")
    assert covers(["chat.*"], "chat.room.*")
    assert not covers(["chat.*"], "*")
    assert not covers(["chat.?"], "chat.*")  # "?" would match the "*" literally
    assert not covers(["a?"], "a*")
    assert covers(["*"], "anything.*")


@pytest.fixture
def secured(url: str) -> Iterator[BackgroundGateway]:
    config = GatewayConfig(auth=AUTH, allowed_origins=("http://app.example",))
    with BackgroundGateway(url, config) as gw:
        yield gw


async def test_websocket_refusals_and_expiry(secured: BackgroundGateway) -> None:
    for bad in (None, token(algorithm="none"), token(exp=-60), token(aud="other")):
        target = secured.ws_url + (f"?token={bad}" if bad else "")
        with pytest.raises(InvalidStatus) as refused:
            async with connect(target):
                pass
        assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        async with connect(secured.ws_url + f"?token={token()}", origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    # A valid token: subscribe within the grant only; then it expires and closes the socket.
    async with connect(
        secured.ws_url, additional_headers={"authorization": f"Bearer {token(exp=3)}"}
    ) as ws:
        await ws.send(json.dumps({"op": "subscribe", "topic": "news", "id": 1}))
        reply = json.loads(await ws.recv())
        assert (reply["type"], reply["code"]) == ("error", "forbidden")
        await ws.send(json.dumps({"op": "subscribe", "topic": "chat.*", "id": 2}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        rcvd = await _closed(ws)
        assert rcvd is not None
        assert (rcvd.code, rcvd.reason) == (1008, "token expired")


async def _closed(ws: ClientConnection) -> Close | None:
    """Read until the gateway closes the connection; its close frame."""
    async with asyncio.timeout(10):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            return exc.rcvd


def test_auth_config_refuses_none() -> None:
    with pytest.raises(ValueError, match="none"):
        AuthConfig(key=KEY, audience="a", issuer="i", algorithms=("none",))


@pytest.fixture
async def recoverable_topic(url: str) -> AsyncIterator[str]:
    name = f"chat.r{os.urandom(4).hex()}"
    async with herald.AsyncClient(url) as hub:
        await hub.declare(name, history=100)
        for i in range(5):
            await hub.publish(name, {"secret": i}, confirm=True)
        yield name


async def test_resume_needs_the_history_grant(
    secured: BackgroundGateway, recoverable_topic: str
) -> None:
    """since/last read the topic's history: without the history grant they were a way
    around it (the subscribe grant alone delivered the stored messages)."""
    topic = recoverable_topic
    subscriber = token(grants={"subscribe": ["chat.*"]})
    async with connect(secured.ws_url + f"?token={subscriber}") as ws:
        for how in ({"since": 0}, {"last": 5}):
            await ws.send(json.dumps({"op": "subscribe", "topic": topic, "id": 1, **how}))
            reply = json.loads(await ws.recv())
            assert (reply["type"], reply["code"]) == ("error", "forbidden"), reply
    base = f"{secured.url}/topics/{topic}/events?token={subscriber}"
    async with httpx.AsyncClient(timeout=5) as http:
        for query in ("&since=0", "&last=5"):
            assert (await http.get(base + query)).status_code == 403
        # EventSource's own Last-Event-ID: the stream goes on live, with a gap, no history.
        async with http.stream("GET", base, headers={"last-event-id": "0"}) as r:
            assert r.status_code == 200
            lines = r.aiter_lines()
            async with asyncio.timeout(5):
                async for line in lines:
                    if line.startswith("data:"):
                        frame = json.loads(line[5:])
                        assert frame["type"] == "gap", frame
                        break
    # With the grant, the same resume delivers the history.
    reader = token(grants={"subscribe": ["chat.*"], "history": ["chat.*"]})
    async with connect(secured.ws_url + f"?token={reader}") as ws:
        await ws.send(json.dumps({"op": "subscribe", "topic": topic, "since": 0, "id": 1}))
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(5):
            while len([f for f in frames if f.get("type") == "message"]) < 5:
                data = json.loads(await ws.recv())
                frames.extend(data if isinstance(data, list) else [data])


async def test_sse_ends_when_its_token_expires(secured: BackgroundGateway) -> None:
    short = token(exp=2)
    started = time.monotonic()
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", f"{secured.url}/topics/chat.x/events?token={short}") as r,
    ):
        assert r.status_code == 200
        body = ""
        async with asyncio.timeout(8):
            async for chunk in r.aiter_text():
                body += chunk
    assert "token expired" in body
    assert time.monotonic() - started < 6


async def test_a_new_token_ends_subscriptions_it_does_not_grant(
    secured: BackgroundGateway, url: str
) -> None:
    """Re-authenticating with any valid token kept the old token's subscriptions."""
    wide = token(grants={"subscribe": ["chat.*", "news"]})
    narrow = token(grants={"subscribe": ["news"]})
    async with connect(secured.ws_url + f"?token={wide}") as ws:
        await ws.send(json.dumps({"op": "subscribe", "topics": ["chat.a", "news"], "id": 1}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        await ws.send(json.dumps({"op": "auth", "token": narrow, "id": 2}))
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(5):
            # The answer, then the subscriptions the new grants end.
            while not any(f["type"] == "unsubscribed" for f in frames):
                data = json.loads(await ws.recv())
                frames.extend(data if isinstance(data, list) else [data])
        assert [f["type"] for f in frames] == ["authenticated", "unsubscribed"]
        dropped = [f for f in frames if f["type"] == "unsubscribed"]
        assert dropped[0]["topics"] == ["chat.a"]
        async with herald.AsyncClient(url) as hub:
            await hub.publish("chat.a", "after", confirm=True)
            await hub.publish("news", "kept", confirm=True)
        async with asyncio.timeout(5):
            data = json.loads(await ws.recv())
        got = data if isinstance(data, list) else [data]
        assert [f["text"] for f in got if f["type"] == "message"] == ["kept"]


async def test_metrics_access_is_configurable(url: str, topic: str) -> None:
    """With auth on, /metrics was open to anyone and named durable topics and groups."""
    secret = "m" * 32
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        await hub.publish(topic, 1, confirm=True)
        async with hub.consume(topic, "billing", start="all") as c:
            await (await c.next(5)).ack(confirm=True)
        cases: dict[str, dict[str | None, int]] = {
            "auth": {None: 401, f"Bearer {secret}": 200, f"Bearer {'x' * 32}": 401},
            "public": {None: 200},
            "off": {None: 404, f"Bearer {secret}": 404},
        }
        for mode, expected in cases.items():
            config = GatewayConfig(auth=AUTH, metrics=mode, metrics_token=secret)  # type: ignore[arg-type]
            app = create_app(hub, config)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                for bearer, status in expected.items():
                    headers = {"authorization": bearer} if bearer else {}
                    r = await c.get("/metrics", headers=headers)
                    assert r.status_code == status, (mode, bearer, r.text)
                    if status != 200:
                        assert topic not in r.text
                    else:
                        assert "herald_gateway_published_total" in r.text


async def test_readyz_probes_at_most_once_per_ready_cache(url: str) -> None:
    """Every /readyz published a probe message: an easy way to make the gateway publish."""
    async with herald.AsyncClient(url) as hub:
        app = create_app(hub, GatewayConfig(ready_cache=5.0))
        gw: Gateway = app.state.gateway
        await gw.start()
        seen: list[herald.Message] = []
        async with hub.subscribe(gw.probe_topic, handler=seen.append):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                replies = await asyncio.gather(*(c.get("/readyz") for _ in range(50)))
                assert all(r.status_code == 200 for r in replies)
                for _ in range(20):
                    assert (await c.get("/readyz")).status_code == 200
                await asyncio.sleep(0.3)
        assert len(seen) == 1, len(seen)
        await gw.stop()


async def test_publish_rate_is_per_token_across_connections(url: str) -> None:
    """A token opening more connections does not get more publishes."""
    config = GatewayConfig(auth=AUTH, publish_rate=0.01, publish_burst=5)
    bearer = token()
    with BackgroundGateway(url, config) as gw:
        async with httpx.AsyncClient(timeout=5) as http:
            for i in range(3):
                r = await http.post(
                    f"{gw.url}/topics/chat.rate",
                    json=i,
                    headers={"authorization": f"Bearer {bearer}"},
                )
                assert r.status_code == 200, r.text
        replies = []
        for _ in range(2):  # two fresh connections, each with a full bucket of its own
            async with connect(gw.ws_url + f"?token={bearer}") as ws:
                for i in range(2):
                    await ws.send(
                        json.dumps({"op": "publish", "topic": "chat.rate", "data": i, "id": i})
                    )
                    replies.append(json.loads(await ws.recv()))
        kinds = [r.get("code", r["type"]) for r in replies]
        assert kinds == ["ack", "ack", "rate_limited", "rate_limited"], kinds


async def test_public_key_tokens_rs256_and_es256(url: str) -> None:
    # The gateway extra brings PyJWT's cryptography: identity providers sign with RS256/ES256.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    for algorithm, private in (
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
    ):
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        auth = AuthConfig(key=public, audience="herald", issuer="tests", algorithms=(algorithm,))
        claims = {"aud": "herald", "iss": "tests", "exp": int(time.time()) + 60, "herald": GRANTS}
        good = jwt.encode(claims, private, algorithm=algorithm)
        forged = jwt.encode(claims, "k" * 64, algorithm="HS256")  # the public key as a secret
        async with herald.AsyncClient(url) as hub:
            app = create_app(hub, GatewayConfig(auth=auth))
            gw: Gateway = app.state.gateway
            await gw.start()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as api:
                ok = await api.post(
                    "/topics/chat.room", json={}, headers={"authorization": f"Bearer {good}"}
                )
                bad = await api.post(
                    "/topics/chat.room", json={}, headers={"authorization": f"Bearer {forged}"}
                )
            await gw.stop()
        assert ok.status_code == 200, (algorithm, ok.text)
        assert bad.status_code == 401, (algorithm, bad.text)
