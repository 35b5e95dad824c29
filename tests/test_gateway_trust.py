"""The gateway keeps Herald's names Herald's: no ``herald-`` headers from clients, no publish into
the reply inbox namespace or a dead-letter topic, no forged envelope on a bare topic, and a
dead-letter replay needs its own grant. A real gateway (uvicorn on a thread) on a real server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect

import herald
from herald._core.wire import Encoder
from herald.gateway import AuthConfig, GatewayConfig
from herald.gateway.serve import BackgroundGateway

KEY = "k" * 64
AUTH = AuthConfig(key=KEY, audience="herald", issuer="tests", leeway=0)


def bearer(**grants: Any) -> dict[str, str]:
    claims = {"sub": "mallory", "aud": "herald", "iss": "tests", "exp": int(time.time() + 300)}
    claims["herald"] = grants
    return {"authorization": f"Bearer {jwt.encode(claims, KEY, algorithm='HS256')}"}


@pytest.fixture
def gw(url: str) -> Iterator[BackgroundGateway]:
    with BackgroundGateway(url, GatewayConfig(auth=AUTH)) as gateway:
        yield gateway


async def _watch(hub: herald.AsyncClient, name: str) -> list[herald.Message]:
    seen: list[herald.Message] = []
    await hub.subscribe(name, handler=seen.append)
    return seen


async def test_a_client_cannot_steer_a_responder_with_reserved_headers(
    url: str, topic: str, gw: BackgroundGateway
) -> None:
    """A token for rpc.* only: an echo responder must not publish into admin.commands for it."""
    rpc, admin = f"rpc.{topic}", f"admin.{topic}"
    async with herald.AsyncClient(url) as service, herald.AsyncClient(url) as watcher:
        landed = await _watch(watcher, admin)
        handled: list[herald.Message] = []

        def echo(msg: herald.Message) -> object:
            handled.append(msg)
            return {"echo": msg.data}

        await service.subscribe(rpc, handler=echo)
        auth = bearer(publish=["rpc.*"], subscribe=["rpc.*"])
        async with httpx.AsyncClient(base_url=gw.url, headers=auth) as api:
            # Its own publish to admin.* is refused...
            r = await api.post(f"/topics/{admin}", json={"cmd": "drop-db"})
            assert r.status_code == 403
            # ...and so is a publish to rpc.* that names admin.* as the reply address.
            for name in ("herald-reply-to", "Herald-Request-Id", "herald-error", "herald-x"):
                r = await api.post(
                    f"/topics/{rpc}",
                    json={"cmd": "drop-db"},
                    headers={f"X-Herald-Header-{name}": admin},
                )
                assert r.status_code == 400, r.text
                assert r.json()["error"] == "reserved_header"
            # Ordinary headers still pass.
            r = await api.post(
                f"/topics/{rpc}", json={"cmd": "ok"}, headers={"X-Herald-Header-trace": "1"}
            )
            assert r.status_code == 200, r.text
        async with connect(gw.ws_url, additional_headers=auth) as ws:
            forged = {"herald-reply-to": admin, "herald-request-id": "1"}
            await ws.send(
                json.dumps({"op": "publish", "topic": rpc, "data": 1, "headers": forged, "id": 7})
            )
            reply = json.loads(await ws.recv())
            assert (reply["type"], reply["code"], reply["id"]) == ("error", "reserved_header", 7)
        async with asyncio.timeout(5):
            while not handled:  # noqa: ASYNC110 - polls counters or the server
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert [m.data for m in handled] == [{"cmd": "ok"}]
        assert landed == []


async def test_the_inbox_namespace_is_closed_to_gateway_clients(
    url: str, topic: str, gw: BackgroundGateway
) -> None:
    everything = bearer(publish=["*"], subscribe=["*"])
    async with herald.AsyncClient(url) as hub:
        inbox = hub._request_table().inbox
        async with httpx.AsyncClient(base_url=gw.url, headers=everything) as api:
            r = await api.post(f"/topics/{inbox}", json={"forged": "reply"})
            assert r.status_code == 403, r.text
            assert r.json()["error"] == "reserved_topic"
            r = await api.get(f"/topics/{inbox}/events", timeout=5)
            assert r.status_code == 403, r.text
        async with connect(gw.ws_url, additional_headers=everything) as ws:
            await ws.send(json.dumps({"op": "publish", "topic": inbox, "data": 1, "id": 1}))
            assert json.loads(await ws.recv())["code"] == "reserved_topic"
            await ws.send(json.dumps({"op": "subscribe", "topic": "_herald.inbox.*", "id": 2}))
            assert json.loads(await ws.recv())["code"] == "reserved_topic"


async def test_dead_letters_cannot_be_forged_and_replay_needs_its_own_grant(
    url: str, topic: str, gw: BackgroundGateway
) -> None:
    orders = f"orders{topic}"
    async with herald.AsyncClient(url) as hub:
        await hub.declare(orders, durable=True)
        writer = bearer(publish=[f"{orders}*"])
        async with httpx.AsyncClient(base_url=gw.url) as api:
            r = await api.post(
                f"/topics/{orders}.dead",
                json={"cmd": "refund everything"},
                headers={**writer, "X-Herald-Header-herald-reason": "max_deliver exceeded"},
            )
            assert r.status_code in (400, 403), r.text
            r = await api.post(f"/topics/{orders}.dead", json={"x": 1}, headers=writer)
            assert r.status_code == 403, r.text
            assert r.json()["error"] == "reserved_topic"
            ws_url = gw.ws_url
            async with connect(ws_url, additional_headers=writer) as ws:
                frame = {"op": "publish", "topic": f"{orders}.dead", "data": 1, "id": 1}
                await ws.send(json.dumps(frame))
                assert json.loads(await ws.recv())["code"] == "reserved_topic"
            assert await hub.dead_letters(orders) == []

            # A real dead letter, made by Herald.
            async with hub.consume(orders, "g", start="all") as c:
                await hub.publish(orders, "bad")
                await (await c.next(5)).term("broken")
            async with asyncio.timeout(5):
                while not await hub.dead_letters(orders):  # noqa: ASYNC110 - polls counters or the server
                    await asyncio.sleep(0.02)
            path = f"/topics/{orders}/dead/replay"
            admin = bearer(admin=True)
            assert (await api.get(f"/topics/{orders}/dead", headers=admin)).status_code == 200
            # Admin alone, replay without publish, publish without replay: refused.
            for grants in (
                {"admin": True},
                {"admin": True, "replay": [orders]},
                {"admin": True, "publish": [orders]},
                {"replay": ["other*"], "publish": [orders]},
            ):
                r = await api.post(path, json={}, headers=bearer(**grants))
                assert r.status_code == 403, (grants, r.text)
            assert len(await hub.dead_letters(orders)) == 1
            r = await api.post(path, json={}, headers=bearer(replay=[orders], publish=[orders]))
            assert r.status_code == 200, r.text
            assert len(r.json()["replayed"]) == 1
            assert await hub.dead_letters(orders) == []


async def test_a_bare_topic_does_not_carry_a_forged_envelope(
    url: str, topic: str, gw: BackgroundGateway
) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, bare=True)
        seen = await _watch(hub, topic)
        forged = Encoder().envelope({"cmd": "x"}, {"herald-reply-to": "admin.commands"})
        auth = bearer(publish=[topic])
        async with httpx.AsyncClient(base_url=gw.url, headers=auth) as api:
            r = await api.post(
                f"/topics/{topic}",
                content=forged,
                headers={"content-type": "application/octet-stream"},
            )
            assert r.status_code == 400, r.text
            assert r.json()["error"] == "reserved_payload"
            # Other bytes pass unchanged, including a lone 0xFF.
            ok = await api.post(
                f"/topics/{topic}", content=b"\xffH", headers={"content-type": "x/y"}
            )
            assert ok.status_code == 200, ok.text
        async with connect(gw.ws_url, additional_headers=auth) as ws:
            b64 = base64.b64encode(forged).decode()
            await ws.send(json.dumps({"op": "publish", "topic": topic, "data_b64": b64, "id": 3}))
            assert json.loads(await ws.recv())["code"] == "reserved_payload"
        async with asyncio.timeout(5):
            while not seen:  # noqa: ASYNC110 - polls counters or the server
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert [(m.data, m.foreign, m.headers) for m in seen] == [(b"\xffH", True, {})]
