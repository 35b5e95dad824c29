"""The gateway's WebSocket and SSE endpoints with real clients against uvicorn on a free port."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

import herald
from conftest import GatewayFactory as Factory
from herald.gateway import serve
from herald.gateway.fanout import RESUME_SUPPORTED
from herald.gateway.frames import json_array, ws_text_frame
from herald.gateway.serve import BackgroundGateway
from herald.gateway.state import Gateway
from herald.gateway.uvicorn_ws import FrameWriterProtocol


@pytest.fixture
async def hub(url: str) -> AsyncIterator[herald.AsyncClient]:
    async with herald.AsyncClient(url, policy_refresh=0.1) as client:
        yield client


async def receive(ws: ClientConnection, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The next ``n`` frames (a WebSocket frame may hold an array of them)."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            data = json.loads(await ws.recv())
            out.extend(data if isinstance(data, list) else [data])
    assert len(out) == n, out
    return out


async def request(ws: ClientConnection, **frame: Any) -> dict[str, Any]:
    await ws.send(json.dumps(frame))
    (reply,) = await receive(ws, 1)
    return reply


async def test_subscribe_publish_unsubscribe(
    gateway_factory: Factory, hub: herald.AsyncClient, topic: str
) -> None:
    gw = gateway_factory()
    async with connect(gw.ws_url) as ws:
        reply = await request(ws, op="subscribe", topics=[topic, f"{topic}.*"], id=1)
        assert reply == {"type": "subscribed", "id": 1, "topics": [topic, f"{topic}.*"]}
        for i in range(50):
            await hub.publish(topic, {"i": i}, headers={"traceparent": "t"})
        await hub.publish(f"{topic}.x", "pattern")
        got = await receive(ws, 51)
        assert [m["data"]["i"] for m in got[:50]] == list(range(50))
        assert got[0]["headers"] == {"traceparent": "t"}
        assert got[50]["text"] == "pattern"
        assert got[50]["subscription"] == f"{topic}.*"

        async with hub.subscribe(f"other.{topic}") as sub:
            ack = await request(ws, op="publish", topic=f"other.{topic}", data=[1, 2], id=2)
            assert ack["type"] == "ack"
            assert ack["receivers"] == 1
            assert (await sub.next(2.0)).data == [1, 2]

        reply = await request(ws, op="unsubscribe", topic=topic, id=3)
        assert reply["type"] == "unsubscribed"
        await hub.publish(topic, "not delivered")
        await hub.publish(f"{topic}.y", "marker")
        (nxt,) = await receive(ws, 1)
        assert nxt["text"] == "marker"
        assert (await request(ws, op="ping", id=4)) == {"type": "pong", "id": 4}
    state: Gateway = gw.app.state.gateway
    for _ in range(100):  # the connection's cleanup runs on the gateway's thread
        if not state.fanout.names:
            break
        await asyncio.sleep(0.02)
    assert state.fanout.names == []


async def test_shared_subscription_fans_out_to_every_client(
    gateway_factory: Factory, hub: herald.AsyncClient, topic: str
) -> None:
    gw = gateway_factory()
    clients = [await connect(gw.ws_url) for _ in range(5)]
    try:
        for ws in clients:
            assert (await request(ws, op="subscribe", topic=topic))["type"] == "subscribed"
        assert gw.app.state.gateway.fanout.clients(topic) == 5
        for i in range(20):
            await hub.publish(topic, i)
        for ws in clients:
            assert [m["data"] for m in await receive(ws, 20)] == list(range(20))
    finally:
        for ws in clients:
            await ws.close()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_ws_text_frame_is_what_the_websockets_library_frames(size: int) -> None:
    payload = b"x" * size
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert ws_text_frame(payload) == expected
    assert json_array([b"1"]) == b"1"
    assert json.loads(json_array([b'{"a":1}', b"2", b'"x"'])) == [{"a": 1}, 2, "x"]


@pytest.mark.parametrize("impl", ["frames", "asgi"])
async def test_burst_reaches_every_client_in_order_with_either_writer(
    gateway_factory: Factory,
    hub: herald.AsyncClient,
    topic: str,
    impl: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "frames": the shared frame written to each transport; "asgi": plain websocket.send.
    if impl == "asgi":
        monkeypatch.setattr(serve, "WS_IMPL", "websockets-sansio")
    gw = gateway_factory()
    kinds = {type(c) for c in gw._server.server_state.connections}
    clients = [await connect(gw.ws_url) for _ in range(10)]
    try:
        for ws in clients:
            assert (await request(ws, op="subscribe", topic=topic))["type"] == "subscribed"
        protocols = [c for c in gw._server.server_state.connections if type(c) not in kinds]
        assert len(protocols) == 10
        assert all(isinstance(c, FrameWriterProtocol) == (impl == "frames") for c in protocols)
        await hub.publish_many(topic, list(range(250)))
        for i in range(250, 500):
            await hub.publish(topic, i)
        for ws in clients:
            frames = await receive(ws, 500, timeout=20)
            assert [m["data"] for m in frames] == list(range(500))
        assert (await request(clients[0], op="ping", id=7)) == {"type": "pong", "id": 7}
    finally:
        for ws in clients:
            await ws.close()


async def test_bad_input_and_limits(gateway_factory: Factory, topic: str) -> None:
    gw = gateway_factory(
        max_subscriptions=2, publish_rate=1, publish_burst=3, max_message_size=2048
    )
    async with connect(gw.ws_url) as ws:
        assert (await request(ws, op="subscribe", topics=["a", "b", "c"], id=1))["code"] == (
            "too_many_subscriptions"
        )
        await ws.send("{not json")
        assert (await receive(ws, 1))[0]["code"] == "bad_request"
        assert (await request(ws, op="dance"))["code"] == "bad_request"
        await ws.send("[" * 1020 + "]" * 1020)  # nesting deeper than the parser goes
        assert (await receive(ws, 1))[0]["code"] == "bad_request"
        assert (await request(ws, op="publish", topic=topic, headers={"a": 1}))["code"] == (
            "bad_request"
        )
        assert (await request(ws, op="subscribe", topic="bad topic"))["code"] == "invalid_topic"
        assert (await request(ws, op="subscribe", topic=topic, since=-1))["code"] == ("bad_request")
        assert (await request(ws, op="publish", topic="x*", data=1, id=9))["code"] == (
            "invalid_topic"
        )
        codes = [
            (await request(ws, op="publish", topic=topic, data=i, id=i)).get("code")
            for i in range(3)
        ]
        assert codes == [None, None, "rate_limited"]  # 3 tokens: one went to "x*" above
        # Still usable after all that; then an oversize frame closes it with 1009.
        assert (await request(ws, op="ping"))["type"] == "pong"
        await ws.send(json.dumps({"op": "publish", "topic": topic, "data": "x" * 4000}))
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws, 1)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
    async with connect(gw.ws_url) as ws:
        await ws.send(b"\xff\xfe not utf-8")
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws, 1)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1007


class RawClient:
    """A WebSocket client on a bare socket that reads only when told to (a stalled browser)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**24)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def send_text(self, text: str) -> None:
        payload = text.encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    async def frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload)."""
        b0, b1 = await self.reader.readexactly(2)
        size = b1 & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return b0 & 0x0F, await self.reader.readexactly(size)


async def test_slow_client_is_cut_off_with_a_reason(
    gateway_factory: Factory, hub: herald.AsyncClient, topic: str
) -> None:
    gw = gateway_factory(max_queue=50)
    state: Gateway = gw.app.state.gateway
    client = await RawClient.connect(gw.port)
    client.send_text(json.dumps({"op": "subscribe", "topic": topic}))
    assert json.loads((await client.frame())[1])["type"] == "subscribed"
    payload = "x" * 8000
    for _ in range(100):
        if state.stats.slow_disconnects:
            break
        for _ in range(100):
            await hub.publish(topic, payload)
        await hub.flush()
        await asyncio.sleep(0.02)
    assert state.stats.slow_disconnects == 1
    assert state.stats.dropped > 0
    # What was already sent arrives, then the close frame with the reason.
    async with asyncio.timeout(20):
        while True:
            opcode, data = await client.frame()
            if opcode == 0x8:
                break
            assert opcode == 0x1
    code = struct.unpack("!H", data[:2])[0]
    assert code == 1008
    assert data[2:].decode().startswith("slow client")
    client.writer.close()


async def _sse_frames(
    response: httpx.Response, n: int, timeout: float = 5.0
) -> list[tuple[str | None, dict[str, Any]]]:
    frames: list[tuple[str | None, dict[str, Any]]] = []
    event_id: str | None = None
    lines = response.aiter_lines()
    async with asyncio.timeout(timeout):
        while len(frames) < n:
            line = await anext(lines)
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                frames.append((event_id, json.loads(line[6:])))
                event_id = None
    return frames


async def _wait_for_clients(gw: BackgroundGateway, topic: str, n: int) -> None:
    for _ in range(250):
        if gw.app.state.gateway.fanout.clients(topic) == n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{n} SSE clients did not subscribe to {topic}")


async def test_sse_streams_messages_and_says_a_live_topic_cannot_resume(
    gateway_factory: Factory, hub: herald.AsyncClient, topic: str
) -> None:
    gw = gateway_factory()
    async with (
        httpx.AsyncClient(base_url=gw.url) as http,
        http.stream("GET", f"/topics/{topic}/events") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        await _wait_for_clients(gw, topic, 1)
        for i in range(10):
            await hub.publish(topic, {"i": i})
        frames = await _sse_frames(response, 10)
        assert [f["data"]["i"] for _, f in frames] == list(range(10))
        assert all(eid for eid, _ in frames)
    async with (
        httpx.AsyncClient(base_url=gw.url) as http,
        http.stream(
            "GET", f"/topics/{topic}/events", headers={"last-event-id": frames[-1][0] or ""}
        ) as response,
    ):
        ((_, first),) = await _sse_frames(response, 1)
        assert first["type"] == "gap"
    async with httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.get("/topics/bad topic/events")
        assert r.status_code == 400


resume = pytest.mark.skipif(
    not RESUME_SUPPORTED,
    reason="recoverable topics (AsyncClient.subscribe(since=, last=)) are not in this Herald",
)


@resume
async def test_ws_resumes_from_an_offset_without_gap_or_duplicate(
    gateway_factory: Factory, hub: herald.AsyncClient, topic: str
) -> None:
    gw = gateway_factory()
    await hub.declare(topic, history=100)
    for i in range(1, 6):
        await hub.publish(topic, i, confirm=True)
    async with connect(gw.ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "topic": topic, "since": 2, "id": 1}))
        frames = await receive(ws, 4)
        subscribed = [f for f in frames if f["type"] == "subscribed"]
        messages = [f for f in frames if f["type"] == "message"]
        assert len(subscribed) == 1
        assert [m["offset"] for m in messages] == [3, 4, 5]
        await hub.publish(topic, 6, confirm=True)
        (live,) = await receive(ws, 1)
        assert (live["offset"], live["data"]) == (6, 6)
    async with connect(gw.ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "topic": topic, "last": 2}))
        frames = await receive(ws, 3)
        assert [f["offset"] for f in frames if f["type"] == "message"] == [5, 6]


@resume
async def test_ws_reports_history_lost(
    gateway_factory: Factory, hub: herald.AsyncClient, topic: str
) -> None:
    gw = gateway_factory()
    await hub.declare(topic, history=3)
    for i in range(1, 11):
        await hub.publish(topic, i, confirm=True)
    async with connect(gw.ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "topic": topic, "since": 1}))
        frames = await receive(ws, 2)
        lost = [f for f in frames if f["type"] == "history_lost"]
        assert lost, frames
        assert lost[0]["topic"] == topic
        assert lost[0]["last_offset"] == 1
    assert gw.app.state.gateway.stats.history_lost == 1


@resume
async def test_sse_resumes_with_last_event_id(
    gateway_factory: Factory, hub: herald.AsyncClient, topic: str
) -> None:
    gw = gateway_factory()
    await hub.declare(topic, history=100)
    for i in range(1, 4):
        await hub.publish(topic, i, confirm=True)
    async with (
        httpx.AsyncClient(base_url=gw.url) as http,
        http.stream("GET", f"/topics/{topic}/events", headers={"last-event-id": "1"}) as r,
    ):
        frames = await _sse_frames(r, 2)
        assert [(eid, f["data"]) for eid, f in frames] == [("2", 2), ("3", 3)]


@resume
async def test_ws_resumed_subscription_survives_the_gateways_reconnect(
    own_server: herald.EmbeddedServer, topic: str
) -> None:
    # A server of its own: the test cuts every pub/sub connection on it.
    async with herald.AsyncClient(own_server.url) as hub:
        await hub.declare(topic, history=1000)
        with BackgroundGateway(own_server.url) as gw:
            async with connect(gw.ws_url) as ws:
                await ws.send(json.dumps({"op": "subscribe", "topic": topic, "since": 0}))
                assert (await receive(ws, 1))[0]["type"] == "subscribed"
                received: list[int] = []
                for i in range(1, 201):
                    await hub.publish(topic, i, confirm=True)
                    if i == 50:
                        # Cut the gateway's subscriber connection; it reconnects by itself and
                        # reads what it missed from the topic's history.
                        await hub.execute("CLIENT", "KILL", "TYPE", "pubsub")
                async with asyncio.timeout(20):
                    while len(received) < 200:
                        data = json.loads(await ws.recv())
                        for frame in data if isinstance(data, list) else [data]:
                            assert frame["type"] in ("message", "gap"), frame
                            if frame["type"] == "message":
                                received.append(frame["offset"])
                assert received == list(range(1, 201))
                state: Gateway = gw.app.state.gateway
                assert state.fanout.recovered() > 0  # some came from history, not live
                assert state.stats.history_lost == 0


async def test_a_history_lost_on_a_shared_subscription_is_forwarded_not_fatal(
    server: herald.EmbeddedServer, topic: str
) -> None:
    """A recoverable topic's HistoryLost on the subscription viewers share: they get a
    ``history_lost`` frame in sequence and the messages after it; it used to end the shared
    subscription and close every viewer with 1011."""
    from herald.faults.proxy import Proxy
    from herald.gateway.fanout import Fanout, GatewayStats, Sink

    async def until(cond: Callable[[], bool], what: str) -> None:
        for _ in range(500):
            if cond():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"not within 10 s: {what}")

    with Proxy(server.port) as proxy:
        async with (
            herald.AsyncClient(server.url) as pub,
            herald.AsyncClient(proxy.url, probe_interval=0.2) as hub,
        ):
            await pub.declare(topic, history=5)
            stats = GatewayStats()
            fanout = Fanout(hub, stats)
            sink = Sink(stats, 100_000, 100_000_000)
            await fanout.add(topic, sink)
            await pub.publish(topic, "first", confirm=True)
            proxy.down()
            await until(lambda: not hub.stats.connected, "the connection lost")
            for i in range(20):
                await pub.publish(topic, i, confirm=True)
            proxy.up()
            await pub.publish(topic, "after", confirm=True)
            await until(lambda: any(b"after" in b.frame() for b in sink.queue), "the next one")
            assert not sink.closed, sink.reason
            frames = [f for b in sink.queue for f in b.frames]
            assert stats.history_lost == 1
            kinds = ["history_lost" if b"history_lost" in f else "message" for f in frames]
            assert kinds[0] == "message"
            assert kinds.count("history_lost") == 1
            await fanout.close()


async def test_publish_with_a_message_type_and_frames_that_show_it(
    gateway_factory: Factory, hub: herald.AsyncClient, topic: str
) -> None:
    gw = gateway_factory()
    async with connect(gw.ws_url) as ws:
        await request(ws, op="subscribe", topic=topic, id=1)
        ack = await request(
            ws, op="publish", topic=topic, data={"id": 7}, message_type="OrderCreated", id=2
        )
        assert ack["type"] == "ack"
        (frame,) = await receive(ws, 1)
        assert frame["message_type"] == "OrderCreated"
        assert frame["data"] == {"id": 7}
        bad = await request(ws, op="publish", topic=topic, data=1, message_type=5, id=3)
        assert bad["type"] == "error"
        assert bad["code"] == "bad_request"
