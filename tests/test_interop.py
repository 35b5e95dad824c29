"""Interop both ways with plain Redis clients: redis-py and redis-cli."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio

import herald
from herald import EmbeddedServer
from herald._wire import MAGIC, decode

REDIS_CLI = "/usr/bin/redis-cli"


@pytest.fixture
async def plain_sub(url: str) -> AsyncIterator[redis.asyncio.client.PubSub]:
    """A redis-py asyncio Pub/Sub connection, as a foreign subscriber would use it."""
    r = redis.asyncio.Redis.from_url(url)
    ps = r.pubsub()
    # redis-py leaves PubSub.aclose unannotated; name its type here for mypy --strict.
    close_pubsub: Callable[[], Awaitable[None]] = ps.aclose
    try:
        yield ps
    finally:
        await close_pubsub()
        await r.aclose()


async def plain_subscribe(ps: redis.asyncio.client.PubSub, channel: str) -> None:
    await ps.subscribe(channel)
    confirmation = await ps.get_message(timeout=2)
    assert confirmation is not None
    assert confirmation["type"] == "subscribe"


async def plain_next(ps: redis.asyncio.client.PubSub) -> dict[str, Any]:
    msg: dict[str, Any] | None = await ps.get_message(ignore_subscribe_messages=True, timeout=2)
    assert msg is not None, "redis-py received nothing"
    return msg


# -- foreign publishers ----------------------------------------------------------------------


async def test_redis_py_publish_reaches_a_herald_subscriber(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic, f"{topic}.*") as sub:
        with redis.Redis.from_url(url) as r:
            assert r.publish(topic, "hello") == 1
            assert r.publish(f"{topic}.x", b"\x00\xfe\xff") == 1
            assert r.publish(topic, "") == 1
        msg = await sub.next(timeout=2)
        assert msg.topic == topic
        assert msg.data == b"hello"
        assert msg.foreign
        assert msg.id is None
        assert msg.timestamp is None
        assert msg.headers == {}
        assert msg.content_type == "application/octet-stream"
        assert msg.decode_error is None
        assert msg.pattern is None
        msg = await sub.next(timeout=2)
        assert (msg.topic, msg.data, msg.pattern) == (f"{topic}.x", b"\x00\xfe\xff", f"{topic}.*")
        assert msg.foreign
        msg = await sub.next(timeout=2)
        assert (msg.data, msg.foreign) == (b"", True)


async def test_foreign_and_herald_messages_interleave_in_order(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        with redis.Redis.from_url(url) as r:
            for i in range(10):
                if i % 2:
                    r.publish(topic, f"plain {i}")
                else:
                    await hub.publish(topic, f"herald {i}", confirm=True)
        got = [await sub.next(timeout=2) for _ in range(10)]
    assert [m.data for m in got] == [
        f"plain {i}".encode() if i % 2 else f"herald {i}" for i in range(10)
    ]
    assert [m.foreign for m in got] == [bool(i % 2) for i in range(10)]


# -- foreign subscribers ---------------------------------------------------------------------

BARE: list[tuple[Any, bytes]] = [
    (b"\x00binary\xff", b"\x00binary\xff"),
    ("text é", "text é".encode()),
    ({"a": 1, "b": [1, 2]}, b'{"a":1,"b":[1,2]}'),
    (7, b"7"),
]


async def test_redis_py_subscriber_gets_bare_payloads(
    url: str, topic: str, plain_sub: redis.asyncio.client.PubSub
) -> None:
    await plain_subscribe(plain_sub, topic)
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, bare=True)
        for data, _ in BARE:
            assert (await hub.publish(topic, data, confirm=True)).receivers == 1
        # Fire-and-forget publishes to a bare topic are never packed into batch frames.
        for i in range(50):
            await hub.publish(topic, f"n{i}")
        await hub.flush()
        for _, raw in BARE:
            msg = await plain_next(plain_sub)
            assert msg["channel"] == topic.encode()
            assert msg["data"] == raw
        assert [(await plain_next(plain_sub))["data"] for _ in range(50)] == [
            f"n{i}".encode() for i in range(50)
        ]


async def test_herald_frames_decode_with_the_wire_module(
    url: str, topic: str, plain_sub: redis.asyncio.client.PubSub
) -> None:
    await plain_subscribe(plain_sub, topic)
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        headers = {"traceparent": "00-abc-def-01"}
        assert (
            await hub.publish(topic, {"x": [1, 2]}, headers=headers, confirm=True)
        ).receivers == 2
        raw = (await plain_next(plain_sub))["data"]
        assert raw.startswith(MAGIC)
        [decoded] = decode(topic, raw)
        mine = await sub.next(timeout=2)
        assert decoded.data == mine.data == {"x": [1, 2]}
        assert decoded.headers == mine.headers == headers
        assert decoded.id == mine.id is not None
        assert decoded.timestamp == mine.timestamp
        assert decoded.content_type == "application/json"


async def test_batch_frames_decode_with_the_wire_module(
    url: str, topic: str, plain_sub: redis.asyncio.client.PubSub
) -> None:
    await plain_subscribe(plain_sub, topic)
    async with herald.AsyncClient(url) as hub:
        for i in range(500):
            await hub.publish(topic, i)
        await hub.flush()
        frames = 0
        decoded: list[Any] = []
        while len(decoded) < 500:
            raw = (await plain_next(plain_sub))["data"]
            frames += 1
            decoded += [m.data for m in decode(topic, raw)]
    assert decoded == list(range(500))
    assert frames < 500  # at least one frame carried several messages


# -- redis-cli -------------------------------------------------------------------------------

needs_cli = pytest.mark.skipif(
    not os.access(REDIS_CLI, os.X_OK), reason=f"{REDIS_CLI} is not installed"
)


@needs_cli
async def test_redis_cli_publish_reaches_a_herald_subscriber(
    server: EmbeddedServer, topic: str
) -> None:
    async with herald.AsyncClient(server.url) as hub, hub.subscribe(topic) as sub:
        proc = await asyncio.create_subprocess_exec(
            REDIS_CLI,
            "-p",
            str(server.port),
            "PUBLISH",
            topic,
            "hello",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 5)
        assert proc.returncode == 0, err
        assert out.strip() == b"1"  # one receiver: Herald's subscriber connection
        msg = await sub.next(timeout=2)
        assert (msg.data, msg.foreign, msg.id) == (b"hello", True, None)


@needs_cli
async def test_redis_cli_subscriber_gets_bare_payloads(server: EmbeddedServer, topic: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        REDIS_CLI,
        "-p",
        str(server.port),
        "--raw",
        "SUBSCRIBE",
        topic,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None

    async def line() -> bytes:
        assert proc.stdout is not None
        return (await asyncio.wait_for(proc.stdout.readline(), 5)).rstrip(b"\n")

    try:
        assert [await line() for _ in range(3)] == [b"subscribe", topic.encode(), b"1"]
        async with herald.AsyncClient(server.url) as hub:
            await hub.declare(topic, bare=True)
            assert (await hub.publish(topic, "plain words", confirm=True)).receivers == 1
            assert (await hub.publish(topic, {"k": "v"}, confirm=True)).receivers == 1
        assert [await line() for _ in range(6)] == [
            b"message",
            topic.encode(),
            b"plain words",
            b"message",
            topic.encode(),
            b'{"k":"v"}',
        ]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
