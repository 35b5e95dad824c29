"""What a WebSocket connection costs the gateway while it keeps up: no task of its own
besides the ASGI one, no leftover HTTP protocol, and light stand-ins for asyncio's queue and
event (a gateway holds thousands of connections)."""

from __future__ import annotations

import asyncio
import gc
import json
import types

import pytest
from websockets.asyncio.client import connect

import herald
from conftest import GatewayFactory as Factory
from herald.gateway.uvicorn_http import LimitedH11Protocol
from herald.gateway.uvicorn_ws import Flag, Inbox


def _writer_coroutines() -> int:
    return sum(
        1
        for o in gc.get_objects()
        if isinstance(o, types.CoroutineType) and o.__qualname__ == "Connection.writer"
    )


def _upgraded_http_protocols() -> int:
    """h11 protocols still alive whose connection became a WebSocket."""
    return sum(
        1
        for o in gc.get_objects()
        if isinstance(o, LimitedH11Protocol) and o.transport.get_protocol() is not o
    )


async def test_a_client_that_keeps_up_has_no_writer_task_nor_http_protocol(
    gateway_factory: Factory, url: str, topic: str
) -> None:
    gw = gateway_factory()
    async with herald.AsyncClient(url) as hub:
        clients = [await connect(gw.ws_url) for _ in range(5)]
        try:
            for ws in clients:
                await ws.send(json.dumps({"op": "subscribe", "topic": topic}))
                assert json.loads(await ws.recv())["type"] == "subscribed"
            await hub.publish(topic, {"n": 1}, confirm=True)
            for ws in clients:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert frame["data"] == {"n": 1}
            gc.collect()
            # Each used to keep a writer task waiting for a backlog that never came, and the
            # HTTP protocol of its handshake alive for the header timeout (10 s).
            assert _writer_coroutines() == 0
            assert _upgraded_http_protocols() == 0
            # A request still gets its answer (written at once, or by a writer started then).
            await clients[0].send(json.dumps({"op": "ping", "id": 7}))
            assert json.loads(await asyncio.wait_for(clients[0].recv(), 5)) == {
                "type": "pong",
                "id": 7,
            }
        finally:
            for ws in clients:
                await ws.close()


async def test_flag_wakes_every_waiter_and_forgets_cancelled_ones() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    cancelled = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert flag._waiters is not None
    assert len(flag._waiters) == 3
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert flag.is_set()
    assert await flag.wait()
    flag.clear()
    assert not flag.is_set()


async def test_inbox_keeps_order_with_and_without_a_backlog() -> None:
    inbox = Inbox()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("a")
    assert await getter == "a"
    assert inbox.empty()
    for item in "bcde":
        inbox.put_nowait(item)
    assert inbox.qsize() == 4
    assert [await inbox.get() for _ in range(4)] == list("bcde")
    inbox.put_nowait("f")
    assert await inbox.get() == "f"
    assert inbox.empty()
