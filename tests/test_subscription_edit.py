"""Changing a subscription's topics and patterns while it runs (``add``/``remove``), and
handlers that end their own subscription or consumer (``StopSubscription``), on real servers:
standalone, Sentinel and Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest

import herald
from herald.testing import LocalCluster, LocalSentinel

pytestmark = pytest.mark.timeout(90)


async def _drain(sub: herald.Subscription, within: float = 0.3) -> list[tuple[str, Any]]:
    """What arrives within ``within`` seconds of quiet."""
    got: list[tuple[str, Any]] = []
    while True:
        try:
            msg = await sub.next(within)
        except herald.Timeout:
            return got
        got.append((msg.topic, msg.data))


async def _add_and_remove(url: str, t: str) -> None:
    async with (
        herald.AsyncClient(url) as hub,
        hub.subscribe(f"{t}.a") as sub,
    ):
        await sub.add(f"{t}.b", f"{t}.p.*", f"{t}.a")  # the one already there is skipped
        assert sub.names == (f"{t}.a", f"{t}.b", f"{t}.p.*")
        for name in ("a", "b", "p.x", "c"):
            await hub.publish(f"{t}.{name}", name, confirm=True)
        assert await _drain(sub) == [(f"{t}.a", "a"), (f"{t}.b", "b"), (f"{t}.p.x", "p.x")]

        await sub.remove(f"{t}.a", f"{t}.p.*")
        assert list(sub.names) == [f"{t}.b"]
        for name in ("a", "b", "p.x"):
            await hub.publish(f"{t}.{name}", name, confirm=True)
        assert await _drain(sub) == [(f"{t}.b", "b")]
        # The server no longer sends them to this client: nobody receives a.
        assert (await hub.publish(f"{t}.a", "a", confirm=True)).receivers == 0

        with pytest.raises(herald.ConfigurationError, match="not subscribed"):
            await sub.remove(f"{t}.zzz")
        with pytest.raises(herald.ConfigurationError, match="close"):
            await sub.remove(f"{t}.b")
        with pytest.raises(herald.ReservedName):
            await sub.add("_herald.inbox.x")
        assert list(sub.names) == [f"{t}.b"]
    with pytest.raises(herald.ClientClosed):
        await sub.add(f"{t}.c")


async def test_add_and_remove_names_on_a_running_subscription(url: str, topic: str) -> None:
    await _add_and_remove(url, topic)


async def test_add_and_remove_on_sentinel(sentinel: LocalSentinel, topic: str) -> None:
    await _add_and_remove(sentinel.url, topic)


async def test_add_and_remove_on_a_cluster(cluster: LocalCluster, topic: str) -> None:
    # Topics of several slots: each added topic is subscribed on its own shard's primary.
    await _add_and_remove(cluster.url, topic)
    async with herald.AsyncClient(cluster.url) as hub, hub.subscribe(f"{topic}.0") as sub:
        names = [f"{topic}.{i}" for i in range(1, 8)]
        await sub.add(*names)
        for name in names:
            await hub.publish(name, name, confirm=True)
        assert sorted(d for _, d in await _drain(sub)) == sorted(names)


async def test_a_handler_subscription_gets_added_topics(url: str, topic: str) -> None:
    got: list[str] = []
    async with herald.AsyncClient(url) as hub:
        sub = await hub.subscribe(f"{topic}.a", handler=lambda m: got.append(m.data))
        await sub.add(f"{topic}.b")
        await hub.publish(f"{topic}.b", "b", confirm=True)
        await hub.publish(f"{topic}.a", "a", confirm=True)
        await _until(lambda: len(got) == 2)
        assert got == ["b", "a"]
        await sub.close()


async def test_a_recoverable_topic_added_later_starts_per_the_subscriptions_last(
    url: str, topic: str
) -> None:
    """A recoverable topic added to a subscription made with ``last=2`` starts 2 messages back;
    one added to a subscription without ``last`` starts at the next message published."""
    rec = f"{topic}.rec"
    async with herald.AsyncClient(url) as hub:
        await hub.declare(rec, history=100)
        for i in range(5):
            await hub.publish(rec, i, confirm=True)
        async with hub.subscribe(f"{topic}.live", last=2) as sub:
            await sub.add(rec)
            await hub.publish(rec, 5, confirm=True)
            got = await _drain(sub)
            assert [d for _, d in got] == [3, 4, 5]
        async with hub.subscribe(f"{topic}.live") as sub:
            await sub.add(f"{topic}.r*")  # a pattern matching the recoverable topic
            await hub.publish(rec, 6, confirm=True)
            msgs = [await sub.next(2)]
            assert [(m.data, m.offset, m.pattern) for m in msgs] == [(6, 7, f"{topic}.r*")]
            await sub.remove(f"{topic}.r*")
            await hub.publish(rec, 7, confirm=True)
            assert await _drain(sub) == []


def test_sync_subscription_add_and_remove(url: str, topic: str) -> None:
    with herald.Client(url) as hub, hub.subscribe(f"{topic}.a") as sub:
        sub.add(f"{topic}.b")
        hub.publish(f"{topic}.b", "b", confirm=True)
        assert sub.next(2).data == "b"
        sub.remove(f"{topic}.b")
        hub.publish(f"{topic}.b", "b2", confirm=True)
        hub.publish(f"{topic}.a", "a", confirm=True)
        assert sub.next(2).data == "a"


# -- StopSubscription ------------------------------------------------------------------------


async def _until(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("kind", ["function", "coroutine"])
async def test_a_handler_stops_its_subscription(url: str, topic: str, kind: str) -> None:
    got: list[int] = []

    def plain(msg: herald.Message) -> None:
        got.append(msg.data)
        if msg.data == 2:
            raise herald.StopSubscription

    async def coro(msg: herald.Message) -> None:
        plain(msg)

    async with herald.AsyncClient(url) as hub:
        sub = await hub.subscribe(topic, handler=plain if kind == "function" else coro)
        for i in range(5):
            await hub.publish(topic, i)
        await _until(lambda: sub.closed)
        await hub.flush()
        assert got == [0, 1, 2]
        assert sub.stats.handler_errors == 0
        assert (await hub.publish(topic, 9, confirm=True)).receivers == 0  # unsubscribed


def test_a_sync_handler_stops_its_subscription(url: str, topic: str) -> None:
    got: list[int] = []

    def handler(msg: herald.Message) -> None:
        got.append(msg.data)
        if msg.data == 1:
            raise herald.StopSubscription

    with herald.Client(url) as hub:
        sub = hub.subscribe(topic, handler=handler)
        for i in range(4):
            hub.publish(topic, i, confirm=True)
        deadline = time.monotonic() + 5
        while hub.publish(topic, "probe", confirm=True).receivers and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got == [0, 1]
        assert sub._sub.closed


async def test_a_consumer_handler_stops_its_consumer(url: str, topic: str) -> None:
    """The message the handler stopped on is acked; nothing after it is handled; what the
    consumer held goes back to the group at once (another consumer gets it)."""
    got: list[int] = []

    async def handler(msg: herald.DurableMessage) -> None:
        got.append(msg.data)
        if msg.data == 1:
            raise herald.StopSubscription

    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        for i in range(4):
            await hub.publish(topic, i)
        c = await hub.consume(topic, "g", start="all", handler=handler)
        await _until(lambda: c.closed)
        assert got == [0, 1]
        assert c.stats.acked == 2
        assert c.error is None
        async with hub.consume(topic, "g", ack_wait=60) as rest:
            assert [(await rest.next(5)).data for _ in range(2)] == [2, 3]


async def test_a_consumer_handler_that_naks_then_stops_gets_the_message_again(
    url: str, topic: str
) -> None:
    async def handler(msg: herald.DurableMessage) -> None:
        await msg.nak(0)
        raise herald.StopSubscription

    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        await hub.publish(topic, "x")
        c = await hub.consume(topic, "g", start="all", handler=handler, concurrency=2)
        await _until(lambda: c.closed)
        assert c.stats.acked == 0
        async with hub.consume(topic, "g") as again:
            msg = await again.next(5)
            assert (msg.data, msg.deliveries) == ("x", 2)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_sync_consumer_handler_stops_its_consumer(url: str, topic: str, concurrency: int) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def handler(msg: herald.DurableMessage) -> None:
        with lock:
            got.append(msg.data)
        if msg.data == 0:
            raise herald.StopSubscription
        time.sleep(0.5)  # the others are still running when the stop comes

    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        for i in range(6):
            hub.publish(topic, i)
        c = hub.consume(topic, "g", start="all", handler=handler, concurrency=concurrency)
        deadline = time.monotonic() + 10
        while not c.closed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.closed
        assert 0 in got
        assert len(got) <= concurrency
        # The one it stopped on is acked; every message never handled was handed back and
        # comes again at once (those whose handlers were still running may too).
        again: set[int] = set()
        with hub.consume(topic, "g", ack_wait=60) as rest, contextlib.suppress(herald.Timeout):
            again.add(rest.next(10).data)
            while True:
                again.add(rest.next(1).data)
        assert 0 not in again
        assert again >= {1, 2, 3, 4, 5} - set(got)
