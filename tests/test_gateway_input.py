"""Bad input to a real gateway is a 4xx (or an error frame) with a clear JSON message: never
a 500, a 1011, a logged traceback, or a Redis error passed through; resumes obey history_limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

import herald
from herald.gateway import GatewayConfig
from herald.gateway.serve import BackgroundGateway

BIG = str(2**64)


@pytest.fixture
def gw(url: str) -> Iterator[BackgroundGateway]:
    with BackgroundGateway(url, GatewayConfig(history_limit=10)) as gateway:
        yield gateway


@pytest.fixture
async def topics(url: str, topic: str) -> AsyncIterator[tuple[str, str]]:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(f"{topic}.r", history=100)
        await hub.declare(f"{topic}.d", durable=True)
        for i in range(20):
            await hub.publish(f"{topic}.r", i, confirm=True)
        yield f"{topic}.r", f"{topic}.d"


async def _reply(ws: ClientConnection, request: str) -> dict[str, Any]:
    await ws.send(request)
    async with asyncio.timeout(5):
        data = json.loads(await ws.recv())
    frame: dict[str, Any] = data[0] if isinstance(data, list) else data
    return frame


async def test_bad_input_gets_clear_4xx_answers(
    gw: BackgroundGateway, topics: tuple[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    recoverable, durable = topics
    async with httpx.AsyncClient(base_url=gw.url, timeout=5) as http:
        r = await http.post(
            f"/topics/{recoverable}",
            content=b'{"x": "\\ud800"}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400, r.text
        assert "surrogate" in r.json()["message"]
        r = await http.post(
            f"/topics/{durable}/dead/replay",
            content=b'{"offsets": ["\\udc00"]}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400, r.text
        bad = [
            f"/topics/{recoverable}/messages?after={BIG}",
            f"/topics/{recoverable}/messages?after=99999999999999999999999",
            f"/topics/{durable}/messages?after={BIG}-0",
            f"/topics/{durable}/dead?after=nonsense",
            f"/topics/{durable}/dead?after={BIG}",
            f"/topics/{recoverable}/events?since={BIG}",
            f"/topics/{recoverable}/events?last={BIG}",
        ]
        for path in bad:
            r = await http.get(path)
            assert r.status_code == 400, (path, r.status_code, r.text)
            assert r.json()["error"] == "bad_request", (path, r.text)
        r = await http.post(
            f"/topics/{durable}/dead/replay",
            json={"offsets": [f"{BIG}-0"]},
        )
        assert r.status_code == 400, r.text
    async with connect(gw.ws_url) as ws:
        for request in (
            '{"op": "publish", "topic": "t", "data": "\\ud800", "id": 1}',
            '{"op": "publish", "topic": "t", "data": 1, "id": "\\ud800"}',
            '{"op": "subscribe", "topic": "\\ud800"}',
            '{"op": "publish", "topic": "t", "data": 1, "headers": {"k": "\\udfff"}, "id": 2}',
            json.dumps({"op": "subscribe", "topic": recoverable, "since": 2**64}),
            json.dumps({"op": "subscribe", "topic": recoverable, "last": 2**63}),
        ):
            reply = await _reply(ws, request)
            assert (reply["type"], reply["code"]) == ("error", "bad_request"), (request, reply)
        assert (await _reply(ws, '{"op": "ping", "id": 9}'))["type"] == "pong"
    output = capfd.readouterr()
    assert "Traceback" not in output.err + output.out
    assert "Exception in ASGI" not in output.err + output.out


async def test_resumes_obey_history_limit(gw: BackgroundGateway, topics: tuple[str, str]) -> None:
    """``last`` beyond history_limit returned that many messages."""
    recoverable, _ = topics
    async with connect(gw.ws_url) as ws:
        reply = await _reply(ws, json.dumps({"op": "subscribe", "topic": recoverable, "last": 15}))
        assert (reply["type"], reply["code"]) == ("error", "bad_request"), reply
        assert "history_limit" in reply["message"] or "at most 10" in reply["message"]
        reply = await _reply(
            ws, json.dumps({"op": "subscribe", "topic": recoverable, "last": 10, "id": 1})
        )
        assert reply["type"] == "subscribed"
    async with httpx.AsyncClient(base_url=gw.url, timeout=5) as http:
        r = await http.get(f"/topics/{recoverable}/events?last=15")
        assert r.status_code == 400
        assert "at most 10" in r.json()["message"]
