"""The WebSocket protocol as docs/gateway.md states it, against a real gateway on real Valkey:
resumes refused where they cannot apply (WebSocket, SSE, Python and the CLI), one position per
topic, and the order of frames."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from websockets.asyncio.client import connect

import herald
from conftest import GatewayFactory as Factory
from herald.gateway.fanout import RESUME_SUPPORTED
from test_gateway_ws import receive as frames
from test_gateway_ws import request as ask

pytestmark = pytest.mark.skipif(
    not RESUME_SUPPORTED, reason="recoverable topics are not in this Herald"
)


async def test_since_and_last_on_a_topic_without_history_are_not_applicable(
    gateway_factory: Factory, url: str, topic: str
) -> None:
    gw = gateway_factory()
    async with herald.AsyncClient(url) as hub:
        await hub.declare(f"{topic}.durable", durable=True)
        await hub.declare(f"{topic}.rec", history=10)
    async with connect(gw.ws_url) as ws:
        for frame in (
            {"topic": topic, "since": 17},
            {"topic": topic, "last": 3},
            {"topic": f"{topic}.durable", "since": 0},
            {"topic": f"{topic}.*", "since": 0},
            {"since": {f"{topic}.rec": 0, topic: 4}},
        ):
            reply = await ask(ws, op="subscribe", id=7, **frame)
            assert reply["type"] == "error", (frame, reply)
            assert (reply["id"], reply["code"]) == (7, "not_applicable"), (frame, reply)
        # Nothing was subscribed by the refused requests (all or nothing).
        reply = await ask(ws, op="unsubscribe", topics=[f"{topic}.rec"], id=8)
        assert reply == {"type": "unsubscribed", "id": 8, "topics": [f"{topic}.rec"]}
        # `last` on a pattern applies to the recoverable topics it matches: accepted.
        reply = await ask(ws, op="subscribe", topic=f"{topic}.*", last=2)
        assert reply["type"] == "subscribed"
    async with httpx.AsyncClient(base_url=gw.url) as http:
        for query in ("since=3", "last=3"):
            r = await http.get(f"/topics/{topic}/events?{query}")
            assert r.status_code == 409, r.text
            assert r.json()["error"] == "not_applicable"


async def test_python_subscribe_since_on_a_live_topic_raises(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(herald.ConfigurationError, match="not recoverable"):
            await hub.subscribe(topic, since=3)
        with pytest.raises(herald.ConfigurationError, match="not recoverable"):
            async with hub.subscribe(topic, since=0):
                pass
        await hub.declare(f"{topic}.d", durable=True)
        with pytest.raises(herald.ConfigurationError, match="not recoverable"):
            await hub.subscribe(f"{topic}.d", since=0)
        with pytest.raises(herald.ConfigurationError, match="one recoverable topic"):
            hub.subscribe(f"{topic}.*", since=0)
        await hub.declare(f"{topic}.r", history=5)
        await hub.publish(f"{topic}.r", 1, confirm=True)
        async with hub.subscribe(f"{topic}.r", since=0) as sub:
            assert (await sub.next(5.0)).data == 1


def test_cli_sub_since_on_a_live_topic_fails(url: str, topic: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "herald.cli",
            "sub",
            topic,
            "--since",
            "3",
            "--url",
            url,
            "--timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "not recoverable" in out.stderr


async def test_since_per_topic_and_frame_order(
    gateway_factory: Factory, url: str, topic: str
) -> None:
    gw = gateway_factory()
    a, b = f"{topic}.a", f"{topic}.b"
    async with herald.AsyncClient(url) as hub:
        await hub.declare(a, history=100)
        await hub.declare(b, history=100)
        for i in range(1, 6):
            await hub.publish(a, f"a{i}", confirm=True)
            await hub.publish(b, f"b{i}", confirm=True)
        async with connect(gw.ws_url) as ws:
            # A number as `since` with several topics is ambiguous: refused.
            reply = await ask(ws, op="subscribe", topics=[a, b], since=3, id=1)
            assert (reply["type"], reply["code"]) == ("error", "bad_request")
            # `since` naming a topic not in `topics`.
            reply = await ask(ws, op="subscribe", topics=[a], since={b: 1}, id=1)
            assert (reply["type"], reply["code"]) == ("error", "bad_request")
            reply = await ask(ws, op="subscribe", topics=[a], since={a: 1}, last=2, id=1)
            assert (reply["type"], reply["code"]) == ("error", "bad_request")
            reply = await ask(ws, op="subscribe", since={a: "x"}, id=1)
            assert (reply["type"], reply["code"]) == ("error", "bad_request")

            await ws.send(json.dumps({"op": "subscribe", "since": {a: 3, b: 1}, "id": 2}))
            got = await frames(ws, 1 + 2 + 4)
            # `subscribed` first, then the recovered messages, in order per topic.
            assert got[0] == {"type": "subscribed", "id": 2, "topics": [a, b]}
            assert [m["offset"] for m in got[1:] if m["topic"] == a] == [4, 5]
            assert [m["offset"] for m in got[1:] if m["topic"] == b] == [2, 3, 4, 5]
            await hub.publish(a, "live", confirm=True)
            (live,) = await frames(ws, 1)
            assert (live["topic"], live["offset"], live["text"]) == (a, 6, "live")
        async with connect(gw.ws_url) as ws:
            # `topics` with `since` for some: the others start live.
            c = f"{topic}.c"
            await ws.send(json.dumps({"op": "subscribe", "topics": [a, c], "since": {a: 5}}))
            got = await frames(ws, 2)
            assert got[0] == {"type": "subscribed", "id": None, "topics": [a, c]}
            assert (got[1]["topic"], got[1]["offset"]) == (a, 6)
            await hub.publish(c, "c", confirm=True)
            (live,) = await frames(ws, 1)
            assert live["topic"] == c


async def test_every_http_error_is_json_and_slashes_in_topics_are_reachable(
    gateway_factory: Factory, url: str, topic: str
) -> None:
    gw = gateway_factory()
    async with herald.AsyncClient(url) as hub, httpx.AsyncClient(base_url=gw.url) as http:
        # A topic holding "/" (legal in Herald), percent-encoded in the path.
        name = f"{topic}/sport"
        async with hub.subscribe(name) as sub:
            r = await http.post(f"/topics/{topic}%2Fsport", json={"score": 1})
            assert r.status_code == 200, r.text
            assert r.json()["topic"] == name
            assert (await sub.next(5.0)).data == {"score": 1}
        # Other percent-escapes decode as before; a literal % stays one.
        async with hub.subscribe(f"{topic}%41") as sub:
            r = await http.post(f"/topics/{topic}%2541", content=b"x")
            assert r.json()["topic"] == f"{topic}%41"
            assert (await sub.next(5.0)).data == b"x"
        for method, path, status, code in (
            ("GET", "/nowhere", 404, "not_found"),
            ("POST", "/topics/a/b/c/d", 404, "not_found"),
            ("GET", "/static/missing.js", 404, "not_found"),
            ("DELETE", f"/topics/{topic}", 405, "method_not_allowed"),
            ("PUT", "/stats", 405, "method_not_allowed"),
        ):
            r = await http.request(method, path)
            assert r.status_code == status, (method, path, r.text)
            assert r.headers["content-type"] == "application/json", (method, path)
            assert r.json()["error"] == code
            assert isinstance(r.json()["message"], str)
            if status == 405:
                assert "GET" in r.headers["allow"] or "POST" in r.headers["allow"]


async def test_a_publish_without_a_payload_is_a_bad_request(
    gateway_factory: Factory, topic: str
) -> None:
    gw = gateway_factory()
    async with connect(gw.ws_url) as ws:
        for frame in (
            {"topic": topic},
            {"topic": topic, "data": 1, "data_b64": "AA=="},
            {"topic": topic, "text": 5},
        ):
            reply = await ask(ws, op="publish", id=3, **frame)
            assert (reply["type"], reply["id"], reply["code"]) == ("error", 3, "bad_request")
        # An explicit null is a JSON value like any other.
        reply = await ask(ws, op="publish", topic=topic, data=None, id=4)
        assert (reply["type"], reply["id"]) == ("ack", 4)


async def test_frames_say_what_was_published(
    gateway_factory: Factory, url: str, topic: str
) -> None:
    """JSON values as `data`, text as `text`, bytes as `data_b64` (even bytes that are UTF-8),
    on the WebSocket, SSE and in history reads; each of the three publish forms arrives as the
    same form."""
    gw = gateway_factory()
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, history=10)
        async with connect(gw.ws_url) as ws:
            assert (await ask(ws, op="subscribe", topic=topic))["type"] == "subscribed"
            await hub.publish(topic, {"a": 1}, confirm=True)
            await hub.publish(topic, "hello", confirm=True)  # a str is published as text
            await hub.publish(topic, b"hello", confirm=True)  # bytes, UTF-8 or not
            await hub.publish(topic, b"\xff\x00", confirm=True)
            for frame in (
                {"data": "a JSON string"},
                {"text": "some text"},
                {"data_b64": "aGk="},
            ):
                await ws.send(json.dumps({"op": "publish", "topic": topic, **frame}))
            got = await frames(ws, 7)
            payloads = [{k: m[k] for k in ("data", "text", "data_b64") if k in m} for m in got]
            expected = [
                {"data": {"a": 1}},
                {"text": "hello"},
                {"data_b64": "aGVsbG8="},
                {"data_b64": "/wA="},
                # Herald publishes a str as text (Python's publish("...") too): a JSON string
                # has no codec of its own.
                {"text": "a JSON string"},
                {"text": "some text"},
                {"data_b64": "aGk="},
            ]
            assert payloads == expected
        async with httpx.AsyncClient(base_url=gw.url) as http:
            page = (await http.get(f"/topics/{topic}/messages?limit=10")).json()
            assert [
                {k: m[k] for k in ("data", "text", "data_b64") if k in m} for m in page["messages"]
            ] == expected
        # Python subscribers get what was published through the gateway.
        history = await hub.history(topic, since=4, limit=10)
        assert [m.data for m in history] == ["a JSON string", "some text", b"hi"]
        assert [m.content_type for m in history] == [
            "text/plain",
            "text/plain",
            "application/octet-stream",
        ]
