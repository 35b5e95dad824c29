"""Interop both ways with plain Redis clients: redis-py and redis-cli."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
import redis.asyncio

import herald
from herald import EmbeddedServer
from herald._core.wire import MAGIC, decode
from herald.testing import LocalCluster, LocalSentinel

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


# -- plain payloads on every topology ---------------------------------------------------------

PLAIN_JSON = '{"user":"bob"}'


class TextReader:
    """A plain redis-py subscriber with ``decode_responses=True``: it reads text, and fails
    (UnicodeDecodeError) on anything that is not UTF-8, a Herald envelope included."""

    def __init__(self, url: str, channel: str) -> None:
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self.pubsub = self.redis.pubsub()
        self.pubsub.subscribe(channel)
        confirmation = self.pubsub.get_message(timeout=2)
        assert confirmation is not None
        assert confirmation["type"] == "subscribe"

    def take(self, n: int, timeout: float = 5.0) -> list[str]:
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"redis-py received {got}, expected {n} messages"
            msg = self.pubsub.get_message(timeout=min(left, 0.5))
            if msg is not None:
                got.append(msg["data"])
        return got

    def close(self) -> None:
        self.pubsub.close()
        self.redis.close()


@pytest.fixture
def text_reader() -> Iterator[Callable[[str, str], TextReader]]:
    readers: list[TextReader] = []

    def make(url: str, channel: str) -> TextReader:
        readers.append(TextReader(url, channel))
        return readers[-1]

    yield make
    for reader in readers:
        reader.close()


async def test_client_without_envelope_sends_plain_json(
    url: str, topic: str, text_reader: Callable[[str, str], TextReader]
) -> None:
    reader = text_reader(url, topic)
    async with herald.AsyncClient(url, envelope=False) as hub:
        assert (await hub.publish(topic, {"user": "bob"}, confirm=True)).receivers == 1
        for i in range(50):  # fire-and-forget: never packed into batch frames
            await hub.publish(topic, {"i": i})
        await hub.publish(topic, "words")
        await hub.publish(topic, b"raw")
        await hub.flush()
    assert reader.take(53) == [PLAIN_JSON, *(f'{{"i":{i}}}' for i in range(50)), "words", "raw"]


async def test_publish_without_envelope_per_message(
    url: str, topic: str, text_reader: Callable[[str, str], TextReader]
) -> None:
    reader = text_reader(url, topic)
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        await hub.publish(topic, {"user": "bob"}, envelope=False)
        await hub.publish(topic, {"user": "bob"}, envelope=False, confirm=True)
        assert reader.take(2) == [PLAIN_JSON, PLAIN_JSON]
        for _ in range(2):  # a Herald subscriber gets them as foreign bytes
            msg = await sub.next(timeout=2)
            assert (msg.data, msg.foreign) == (PLAIN_JSON.encode(), True)
        with pytest.raises(herald.ConfigurationError, match="headers"):
            await hub.publish(topic, 1, envelope=False, headers={"k": "v"})


async def test_client_without_envelope_still_sends_requests(url: str, topic: str) -> None:
    async with (
        herald.AsyncClient(url, envelope=False) as hub,
        hub.subscribe(topic, handler=lambda m: {"echo": m.data}),
    ):
        reply = await hub.request(topic, {"q": 1}, timeout=2)
        assert reply.data == {"echo": {"q": 1}}
        assert not reply.foreign


async def test_bare_topic_with_envelope_per_message(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        await hub.declare(topic, bare=True)
        await hub.publish(topic, {"n": 1}, envelope=True, headers={"k": "v"})
        msg = await sub.next(timeout=2)
        assert (msg.data, msg.headers, msg.foreign) == ({"n": 1}, {"k": "v"}, False)


async def test_recoverable_topic_refuses_publish_without_envelope(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, history=10)
        with pytest.raises(herald.ConfigurationError, match="recoverable"):
            await hub.publish(topic, 1, envelope=False)


def test_sync_client_without_envelope(
    url: str, topic: str, text_reader: Callable[[str, str], TextReader]
) -> None:
    reader = text_reader(url, topic)
    with herald.Client(url, envelope=False) as hub:
        hub.publish(topic, {"user": "bob"})
        hub.flush()
    with herald.Client(url) as hub:
        hub.publish(topic, {"user": "bob"}, envelope=False)
        hub.publish(topic, {"user": "bob"}, envelope=False, confirm=True)
        hub.publish_many(topic, [{"user": "bob"}] * 2, envelope=False)
        hub.flush()
    assert reader.take(5) == [PLAIN_JSON] * 5


def test_cli_pub_plain(url: str, topic: str, text_reader: Callable[[str, str], TextReader]) -> None:
    reader = text_reader(url, topic)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "herald.cli",
            "pub",
            topic,
            PLAIN_JSON,
            "--json",
            "--plain",
            "--url",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert reader.take(1) == [PLAIN_JSON]


async def test_plain_subscriber_on_sentinel(
    sentinel: LocalSentinel, topic: str, text_reader: Callable[[str, str], TextReader]
) -> None:
    reader = text_reader(sentinel.primary.url, topic)
    async with herald.AsyncClient(sentinel.url, envelope=False) as hub:
        assert (await hub.publish(topic, {"user": "bob"}, confirm=True)).receivers == 1
        await hub.publish(topic, {"user": "bob"})
        await hub.flush()
    assert reader.take(2) == [PLAIN_JSON] * 2


async def test_plain_subscriber_on_cluster_topic_policy(
    cluster: LocalCluster, topic: str, text_reader: Callable[[str, str], TextReader]
) -> None:
    # A plain SUBSCRIBE on every node: on the slot's primary and on nodes that do not serve it.
    readers = [text_reader(node.url, topic) for node in cluster.nodes]
    async with herald.AsyncClient(cluster.url) as hub, hub.subscribe(topic) as sub:
        await hub.declare(topic, bare=True, sharded=False)
        ack = await hub.publish(topic, {"user": "bob"}, confirm=True)
        assert ack.receivers >= 1
        await hub.publish(topic, {"user": "bob"})
        await hub.flush()
        for reader in readers:
            assert reader.take(2) == [PLAIN_JSON] * 2
        for _ in range(2):  # Herald's own subscriber gets each once
            msg = await sub.next(timeout=2)
            assert (msg.data, msg.foreign) == (PLAIN_JSON.encode(), True)
        with pytest.raises(herald.Timeout):
            await sub.next(timeout=0.3)


async def test_plain_subscriber_on_cluster_client_option(
    cluster: LocalCluster, topic: str, text_reader: Callable[[str, str], TextReader]
) -> None:
    reader = text_reader(cluster.primary_for(topic).url, topic)
    async with (
        herald.AsyncClient(cluster.url, envelope=False, sharded=False) as hub,
        hub.subscribe(topic) as sub,
    ):
        await hub.publish(topic, {"user": "bob"})
        assert (await hub.publish(topic, {"user": "bob"}, confirm=True)).receivers >= 1
        assert reader.take(2) == [PLAIN_JSON] * 2
        for _ in range(2):
            assert (await sub.next(timeout=2)).data == PLAIN_JSON.encode()


async def test_bare_policy_reaches_other_publishers_within_policy_refresh(
    url: str, topic: str, plain_sub: redis.asyncio.client.PubSub
) -> None:
    """The documented bound: another client publishes bare at the latest ``policy_refresh``
    after ``declare`` returned (the declaring client at once)."""
    await plain_subscribe(plain_sub, topic)
    refresh = 0.2
    async with (
        herald.AsyncClient(url) as declarer,
        herald.AsyncClient(url, policy_refresh=refresh) as other,
    ):
        await other.publish(topic, "before", confirm=True)
        await declarer.declare(topic, bare=True)
        declared = time.monotonic()
        await declarer.publish(topic, "declarer", confirm=True)
        sent: list[tuple[float, int]] = []
        i = 0
        while time.monotonic() - declared < refresh * 3:
            sent.append((time.monotonic() - declared, i))
            await other.publish(topic, {"i": i}, confirm=True)
            i += 1
            await asyncio.sleep(0.01)
    assert (await plain_next(plain_sub))["data"].startswith(MAGIC)
    assert (await plain_next(plain_sub))["data"] == b"declarer"
    for at, n in sent:
        data = (await plain_next(plain_sub))["data"]
        if at > refresh + 0.05:  # past the bound (and a scheduling margin): always bare
            assert data == f'{{"i":{n}}}'.encode(), (at, data)
    assert data == f'{{"i":{n}}}'.encode()


# -- foreign JSON for Herald subscribers ------------------------------------------------------


class User(msgspec.Struct):
    user: str


async def test_subscriber_decodes_foreign_json_when_asked(url: str, topic: str) -> None:
    typed: list[User] = []
    two = asyncio.Event()

    def on_user(user: User) -> None:  # a typed handler: gets the payload decoded into User
        typed.append(user)
        if len(typed) == 2:
            two.set()

    async with (
        herald.AsyncClient(url) as hub,
        hub.subscribe(topic, foreign="json") as sub,
        hub.subscribe(topic) as raw_sub,  # the default, on the same connection: bytes
        hub.subscribe(topic, handler=on_user, foreign="json") as typed_sub,
        hub.subscribe(f"{topic}.*", foreign="text") as text_sub,
    ):
        with redis.Redis.from_url(url, decode_responses=True) as r:
            r.publish(topic, PLAIN_JSON)
            r.publish(topic, "not json")
            r.publish(f"{topic}.x", "héllo")
        await hub.publish(topic, {"user": "eve"})  # a Herald message is not affected
        msg = await sub.next(timeout=2)
        assert (msg.data, msg.foreign, msg.decode_error) == ({"user": "bob"}, True, None)
        assert msg.content_type == "application/json"
        bad = await sub.next(timeout=2)
        assert (bad.data, bad.foreign) == (b"not json", True)
        assert isinstance(bad.decode_error, herald.DecodeError)
        assert "not valid json" in str(bad.decode_error)
        mine = await sub.next(timeout=2)
        assert (mine.data, mine.foreign) == ({"user": "eve"}, False)
        assert sub.stats.undecodable == 1
        assert [(await raw_sub.next(timeout=2)).data for _ in range(3)] == [
            PLAIN_JSON.encode(),
            b"not json",
            {"user": "eve"},
        ]
        text = await text_sub.next(timeout=2)
        assert (text.data, text.content_type, text.foreign) == ("héllo", "text/plain", True)
        await asyncio.wait_for(two.wait(), 2)
        assert typed == [User("bob"), User("eve")]
        assert typed_sub.stats.invalid == 1  # "not json": skipped


def test_sync_subscriber_decodes_foreign_json(url: str, topic: str) -> None:
    with herald.Client(url) as hub, hub.subscribe(topic, foreign="json") as sub:
        with redis.Redis.from_url(url) as r:
            r.publish(topic, PLAIN_JSON)
        assert sub.next(timeout=2).data == {"user": "bob"}


async def test_consumer_decodes_foreign_json_and_dead_letters_the_rest(
    url: str, topic: str
) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        await hub.publish(topic, {"user": "bob"}, envelope=False)  # stored without envelope
        await hub.publish(topic, "not json", envelope=False)
        await hub.publish(topic, {"user": "eve"})
        async with hub.consume(topic, "g", start="all", foreign="json") as c:
            first = await c.next(timeout=2)
            assert (first.data, first.foreign) == ({"user": "bob"}, True)
            await first.ack()
            second = await c.next(timeout=2)
            assert second.data == {"user": "eve"}
            await second.ack()
            assert c.stats.decode_errors == 1
        async with hub.consume(f"{topic}.dead", "inspect", start="all") as dead:
            letter = await dead.next(timeout=5)
            assert letter.data == b"not json"
            assert letter.headers["herald-reason"].startswith(
                "undecodable: foreign payload is not valid json"
            )
            await letter.ack()


async def test_unknown_foreign_choice_is_refused(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(herald.ConfigurationError, match="foreign"):
            hub.subscribe(topic, foreign="yaml")  # type: ignore[arg-type]


def test_cli_on_cluster_plain_and_unsharded(
    cluster: LocalCluster, topic: str, text_reader: Callable[[str, str], TextReader]
) -> None:
    herald_cli = [sys.executable, "-m", "herald.cli"]
    on_cluster = ["--url", cluster.url]
    reader = text_reader(cluster.nodes[0].url, topic)
    out = subprocess.run(
        [*herald_cli, "pub", topic, PLAIN_JSON, "--json", "--plain", "--unsharded", *on_cluster],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert reader.take(1) == [PLAIN_JSON]
    declared = subprocess.run(
        [*herald_cli, "topics", "declare", f"{topic}.t", "--bare", "--unsharded", *on_cluster],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert declared.returncode == 0, declared.stderr
    assert "bare, unsharded" in declared.stdout
    with herald.Client(cluster.url) as hub:
        assert not hub.declare(f"{topic}.t", bare=True, sharded=False).sharded


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed")
async def test_node_plain_subscriber_parses_json(server: EmbeddedServer, topic: str) -> None:
    assert NODE is not None
    script = Path(__file__).parent / "node" / "plain_subscriber.mjs"
    proc = await asyncio.create_subprocess_exec(
        NODE,
        str(script),
        str(server.port),
        topic,
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert json.loads(first) == {"subscribed": topic}
        async with herald.AsyncClient(server.url) as hub:
            await hub.publish(topic, {"user": "bob"}, envelope=False)
            await hub.publish(topic, ["é", 1.5, None], envelope=False)
        out, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"data": {"user": "bob"}},
        {"data": ["é", 1.5, None]},
    ]


async def test_cluster_publisher_switches_to_publish_when_another_client_declares(
    cluster: LocalCluster, topic: str, text_reader: Callable[[str, str], TextReader]
) -> None:
    reader = text_reader(cluster.nodes[0].url, topic)
    async with (
        herald.AsyncClient(cluster.url, policy_refresh=0.1) as publisher,
        herald.AsyncClient(cluster.url) as declarer,
    ):
        await publisher.publish(topic, "sharded, unseen")  # its route is cached as SPUBLISH
        assert (await publisher.publish(topic, "x", confirm=True)).receivers == 0
        await declarer.declare(topic, bare=True, sharded=False)
        await asyncio.sleep(0.5)  # the publisher's policy_refresh, with room to spare
        # (receivers counts the subscribers of the node that took the PUBLISH only)
        await publisher.publish(topic, {"user": "bob"}, confirm=True)
        await publisher.publish(topic, {"user": "bob"})
        await publisher.flush()
    assert reader.take(2) == [PLAIN_JSON] * 2
