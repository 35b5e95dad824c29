"""A subscriber that does not read: bounded buffers, overflow policies and exact counters.

Each test pairs the slow subscription on a topic with a *watcher*: a pattern subscription on the
same client that reads everything. For every PUBLISH the server sends the channel's message before
the pattern's, on the same connection, so when the watcher has the last message the slow
subscription has been offered all of them: no sleeps, no polling.
"""

from __future__ import annotations

import pytest

import herald
from herald import EmbeddedServer

MAX = 100


async def publish_and_watch(
    hub: herald.AsyncClient, slow: herald.Subscription, topic: str, n: int
) -> None:
    watcher = await hub.subscribe(f"{topic}*", max_pending=n + 1)
    for i in range(n):
        await hub.publish(topic, i)
    for i in range(n):
        assert (await watcher.next(5)).data == i
        assert slow.pending <= MAX  # memory stays bounded all along
    await watcher.close()


async def drain(sub: herald.Subscription, n: int) -> list[object]:
    return [(await sub.next(1)).data for _ in range(n)]


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "unbatched"])
async def test_drop_oldest_keeps_the_newest(url: str, topic: str, batch: bool) -> None:
    n = 1000
    async with herald.AsyncClient(url, batch=batch) as hub:
        slow = await hub.subscribe(topic, max_pending=MAX, overflow="drop_oldest")
        await publish_and_watch(hub, slow, topic, n)
        assert slow.pending == MAX
        assert slow.stats.dropped == n - MAX
        assert await drain(slow, MAX) == list(range(n - MAX, n))
        assert slow.stats.delivered == MAX
        # Caught up: the subscription goes on as normal.
        await hub.publish(topic, "next")
        assert (await slow.next(5)).data == "next"
        assert slow.stats.dropped == n - MAX
        await slow.close()


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "unbatched"])
async def test_drop_newest_keeps_the_first(url: str, topic: str, batch: bool) -> None:
    n = 1000
    async with herald.AsyncClient(url, batch=batch) as hub:
        slow = await hub.subscribe(topic, max_pending=MAX, overflow="drop_newest")
        await publish_and_watch(hub, slow, topic, n)
        assert slow.pending == MAX
        assert slow.stats.dropped == n - MAX
        assert await drain(slow, MAX) == list(range(MAX))
        await hub.publish(topic, "next")
        assert (await slow.next(5)).data == "next"
        assert slow.stats.dropped == n - MAX
        await slow.close()


@pytest.mark.parametrize(
    ("batch", "n"),
    [(False, 1000), (True, MAX + 1)],
    ids=["unbatched", "batched"],
)
async def test_disconnect_raises_after_the_buffered_messages(
    own_server: EmbeddedServer, topic: str, batch: bool, n: int
) -> None:
    # Unbatched, the 101st message overflows alone and the rest never reach the subscription
    # (it left the channel at once). Batched, a frame may straddle the limit: what fits is kept.
    async with herald.AsyncClient(own_server.url, batch=batch) as hub:
        slow = await hub.subscribe(topic, max_pending=MAX, overflow="disconnect")
        await publish_and_watch(hub, slow, topic, n)
        assert slow.closed
        assert slow.pending == MAX
        assert slow.stats.dropped == 1
        assert await hub.execute("PUBSUB", "NUMSUB", topic) == [topic.encode(), 0]

        it = aiter(slow)
        assert [(await anext(it)).data for _ in range(MAX)] == list(range(MAX))
        with pytest.raises(herald.SlowConsumer) as info:
            await anext(it)
        assert (info.value.pending, info.value.dropped) == (MAX, 1)
        with pytest.raises(herald.SlowConsumer):
            await slow.next(1)  # it stays failed
        await slow.close()


async def test_disconnect_leaves_other_subscriptions_of_the_topic_alone(
    url: str, topic: str
) -> None:
    async with herald.AsyncClient(url, batch=False) as hub:
        slow = await hub.subscribe(topic, max_pending=MAX, overflow="disconnect")
        other = await hub.subscribe(topic)
        for i in range(MAX + 10):
            await hub.publish(topic, i)
        assert await drain(other, MAX + 10) == list(range(MAX + 10))
        assert slow.closed
        assert other.stats.dropped == 0
        # The channel stays subscribed on the server for the subscription still reading it.
        assert await hub.execute("PUBSUB", "NUMSUB", topic) == [topic.encode(), 1]
        await hub.publish(topic, "more")
        assert (await other.next(5)).data == "more"
        await other.close()
        await slow.close()


def test_sync_disconnect(url: str, topic: str) -> None:
    with herald.Client(url, batch=False) as hub:
        slow = hub.subscribe(topic, max_pending=10, overflow="disconnect")
        with hub.subscribe(f"{topic}*") as watcher:
            for i in range(20):
                hub.publish(topic, i)
            assert [watcher.next(5).data for _ in range(20)] == list(range(20))
        it = iter(slow)
        assert [next(it).data for _ in range(10)] == list(range(10))
        with pytest.raises(herald.SlowConsumer):
            next(it)
        assert slow.stats.dropped == 1
        slow.close()


def test_invalid_options(url: str, topic: str) -> None:
    hub = herald.AsyncClient(url)
    with pytest.raises(herald.ConfigurationError):
        hub.subscribe(topic, max_pending=0)
    with pytest.raises(herald.ConfigurationError):
        hub.subscribe(topic, overflow="block")  # type: ignore[arg-type]
