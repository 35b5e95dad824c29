"""herald.fastapi and examples/fastapi_app against a real Valkey: the app's HTTP API through
httpx's ASGI transport (the lifespan entered as a server would), the WebSocket relay through
Starlette's TestClient."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, WebSocket
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.client import connect

import herald
from herald._server import free_port
from herald.fastapi import Herald, Hub, client, relay

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app" / "main.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.asynccontextmanager
async def running(app: FastAPI | Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """The app served by uvicorn on a free port of 127.0.0.1, on this event loop."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not task.done(), task
        await asyncio.sleep(0.01)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_the_example_app_orders_billing_and_lookup(url: str) -> None:
    app = load_example().create_app(url)
    async with running(app) as http:
        # Published over HTTP, billed by the durable consumer registered on the app.
        r = await http.post("/orders", json={"id": 7, "total": 9.5})
        assert r.status_code == 200
        assert r.json()["duplicate"] is False
        again = await http.post("/orders", json={"id": 7, "total": 9.5})
        assert again.json() == {"offset": r.json()["offset"], "duplicate": True}

        async def billed() -> bool:
            billed: dict[str, float] = (await http.get("/billed")).json()
            return billed == {"7": 9.5}

        await _eventually(billed)
        # Request/reply through the responder registered on the app.
        geo = await http.get("/geo/1.2.3.4")
        assert geo.json() == {"ip": "1.2.3.4", "country": "NZ"}
        assert isinstance((await http.post("/prices/eur", json=101.5)).json()["offset"], int)
        assert (await http.post("/prices/gbp", json=1.0)).status_code == 404
        assert app.state.herald.endpoint is not None
    # The lifespan closed the client.
    with pytest.raises(herald.ClientClosed):
        await app.state.herald.publish("orders", {})


async def test_the_example_app_relays_prices_over_a_websocket(url: str) -> None:
    app = load_example().create_app(url)
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        # Published before the socket opens: the relay's last=1 sends it first.
        offset = (await http.post("/prices/eur", json=101.5)).json()["offset"]
        async with connect(f"ws://{address}/ws/prices") as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert (first["topic"], first["data"], first["offset"]) == ("prices.eur", 101.5, offset)
            await http.post("/prices/usd", json=1.25)
            await http.post("/prices/eur", json=101.75)
            got = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
            assert [(m["topic"], m["data"]) for m in got] == [
                ("prices.usd", 1.25),
                ("prices.eur", 101.75),
            ]


async def test_lookup_without_a_responder_is_a_503(url: str) -> None:
    app = load_example().create_app(url)
    async with running(app) as http:
        await app.state.herald.execute("PING")
        # No responder for another topic: the endpoint maps NoResponders to 503.
        hub: herald.AsyncClient = app.state.herald
        with pytest.raises(herald.NoResponders):
            await hub.request("geo.nobody", {}, timeout=1.0)
        assert (await http.get("/geo/1.2.3.4")).status_code == 200


async def test_starlette_alone_and_the_dependency(url: str, topic: str) -> None:
    integration = Herald(url)

    async def publish(request: Request) -> JSONResponse:
        hub = client(request)
        ack = await hub.publish(topic, await request.json(), confirm=True)
        return JSONResponse({"receivers": ack.receivers})

    app = Starlette(routes=[Route("/p", publish, methods=["POST"])], lifespan=integration.lifespan)
    async with running(app) as http, integration.hub.subscribe(topic) as sub:
        assert (await http.post("/p", json={"a": 1})).json() == {"receivers": 1}
        assert (await sub.next(timeout=2)).data == {"a": 1}
    with pytest.raises(RuntimeError, match="only while the app runs"):
        _ = integration.hub


async def test_hub_is_a_dependency_and_setup_runs_first(url: str, topic: str) -> None:
    calls: list[str] = []

    async def setup(hub: herald.AsyncClient) -> None:
        await hub.declare(topic, history=10)
        calls.append("setup")

    integration = Herald(url, setup=setup)
    app = FastAPI(lifespan=integration.lifespan)

    @integration.subscriber(topic, since=0)
    def seen(msg: herald.Message) -> None:
        calls.append(f"message {msg.offset}")

    @app.get("/same")
    async def same(hub: Hub, other: Annotated[herald.AsyncClient, Depends(client)]) -> bool:
        return hub is other is app.state.herald

    async with running(app) as http:
        assert (await http.get("/same")).json() is True
        await integration.hub.publish(topic, "x", confirm=True)

        async def delivered() -> bool:
            return "message 1" in calls

        await _eventually(delivered)
    assert calls[0] == "setup"
    assert integration.subscriptions == []


async def test_a_client_that_goes_away_ends_the_relay(url: str, topic: str) -> None:
    integration = Herald(url)
    app = FastAPI(lifespan=integration.lifespan)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await relay(websocket, client(websocket), topic)

    async with serving(app) as address:
        hub = integration.hub
        async with connect(f"ws://{address}/ws") as sock:
            await hub.publish(topic, b"\xffraw", confirm=True)
            msg = json.loads(await asyncio.wait_for(sock.recv(), 5))
            assert msg["data"] == "\ufffdraw"

        async def none_left() -> bool:
            reply = await hub.execute("PUBSUB", "NUMSUB", topic)
            return int(reply[1]) == 0

        await _eventually(none_left)
