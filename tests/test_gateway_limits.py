"""What an abusive client can cost a real gateway (uvicorn on a free port), measured: slow
clients cut and freed, the connection cap, header and body timeouts, HTTP publish rates."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import herald
from herald.gateway import GatewayConfig
from herald.gateway.serve import BackgroundGateway
from herald.gateway.state import Gateway
from herald.gateway.uvicorn_ws import CLOSE_TIMEOUT
from test_gateway_ws import RawClient

Factory = Callable[..., BackgroundGateway]


@pytest.fixture
def gateway_factory(url: str) -> Iterator[Factory]:
    started: list[BackgroundGateway] = []

    def make(**options: Any) -> BackgroundGateway:
        gw = BackgroundGateway(url, GatewayConfig(**options)).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


def _connections(gw: BackgroundGateway) -> int:
    return len(gw._server.server_state.connections)


async def _until(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check()`` holds; fails after ``timeout``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "condition not reached in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def _flood(hub: herald.AsyncClient, topic: str, state: Gateway) -> None:
    payload = "x" * 8000
    for _ in range(400):
        if state.stats.slow_disconnects:
            return
        for _ in range(100):
            await hub.publish(topic, payload)
        await hub.flush()
        await asyncio.sleep(0.01)
    raise AssertionError("the client was never cut")


@pytest.mark.timeout(60)
async def test_a_cut_websocket_client_is_freed(
    gateway_factory: Factory, url: str, topic: str
) -> None:
    """A client that never reads was sent 1008 and stayed connected (with megabytes of
    buffered frames) for as long as it liked."""
    gw = gateway_factory(max_queue=50)
    state: Gateway = gw.app.state.gateway
    client = await RawClient.connect(gw.port)
    client.send_text(json.dumps({"op": "subscribe", "topic": topic}))
    assert json.loads((await client.frame())[1])["type"] == "subscribed"
    async with herald.AsyncClient(url) as hub:
        await _flood(hub, topic, state)
    # It never reads again. The gateway aborts its connection after the close timeout.
    freed = await _until(lambda: state.stats.ws_clients == 0 and _connections(gw) == 0, 20)
    assert freed < CLOSE_TIMEOUT + 3, freed
    print(f"cut WebSocket client freed {freed:.2f} s after the cut")
    client.writer.close()


@pytest.mark.timeout(60)
async def test_a_cut_sse_client_is_freed(gateway_factory: Factory, url: str, topic: str) -> None:
    """An SSE client that never reads stayed registered, its stream blocked on the socket."""
    gw = gateway_factory(max_queue=50)
    state: Gateway = gw.app.state.gateway
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gw.port))
    sock.sendall(f"GET /topics/{topic}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await _until(lambda: state.fanout.clients(topic) == 1, 5)
    async with herald.AsyncClient(url) as hub:
        await _flood(hub, topic, state)
    # Unregistered, and its connection dropped (with what was buffered for it) at once.
    freed = await _until(
        lambda: (
            state.stats.sse_clients == 0
            and state.fanout.clients(topic) == 0
            and _connections(gw) == 0
        ),
        2,
    )
    print(f"cut SSE client unregistered and disconnected {freed:.2f} s after the cut")
    sock.close()


@pytest.mark.timeout(60)
async def test_connections_are_capped(gateway_factory: Factory) -> None:
    gw = gateway_factory(max_connections=20)
    socks = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(60)]
    await asyncio.sleep(0.5)
    assert _connections(gw) <= 20, _connections(gw)
    closed = 0
    for s in socks:
        s.settimeout(0.2)
        try:
            closed += s.recv(1) == b""
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed += 1
    assert closed == 40, closed
    for s in socks:
        s.close()
    await _until(lambda: _connections(gw) == 0, 5)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{gw.url}/healthz")).status_code == 200


@pytest.mark.timeout(60)
async def test_slow_headers_and_bodies_time_out(gateway_factory: Factory, topic: str) -> None:
    """200 half-sent requests (slowloris) held their connections for as long as they liked."""
    gw = gateway_factory(header_timeout=1.0, body_timeout=1.0)
    socks = []
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", gw.port))
        if i % 2:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never end
        else:
            s.sendall(
                f"POST /topics/{topic} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Length: 100\r\n\r\n0123456789".encode()  # 90 bytes never come
            )
        socks.append(s)
    await asyncio.sleep(0.3)
    assert _connections(gw) == 200
    start = time.monotonic()
    try:
        while _connections(gw):  # keep trickling: a byte does not reset the clock
            for s in socks[1::2]:
                try:
                    s.sendall(b"X")
                except OSError:  # aborted by the gateway
                    pass
            await asyncio.sleep(0.1)
            assert time.monotonic() - start < 5, _connections(gw)
        freed = time.monotonic() - start + 0.3
        print(f"200 slowloris connections all freed {freed:.2f} s after they opened")
        assert freed < 2.5
    finally:
        for s in socks:
            s.close()
    # A request that keeps up is not affected; nor is a long-lived SSE stream.
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{gw.url}/healthz")).status_code == 200
        async with http.stream("GET", f"{gw.url}/topics/{topic}/events") as r:
            await asyncio.sleep(2.0)
            assert _connections(gw) == 1
            assert r.status_code == 200


async def test_http_publishes_are_rate_limited(gateway_factory: Factory, topic: str) -> None:
    gw = gateway_factory(publish_rate=5, publish_burst=5)
    async with httpx.AsyncClient() as http:
        codes = [
            (await http.post(f"{gw.url}/topics/{topic}", json=i)).status_code for i in range(12)
        ]
    assert codes.count(200) == 5, codes
    assert codes.count(429) == 7, codes
