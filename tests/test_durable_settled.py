"""Waiting until a consumer group settled a durable message (``wait_acked``), and the warning
for durable topics on a server without persistence, on real servers."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

import herald
from herald.testing import LocalCluster

pytestmark = pytest.mark.timeout(90)


async def _wait_acked(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        seen = asyncio.Event()
        release = asyncio.Event()

        async def handler(msg: herald.DurableMessage) -> None:
            seen.set()
            await release.wait()
            if msg.data == "bad":
                raise ValueError("cannot bill")

        async with hub.consume(topic, "billing", handler=handler, max_deliver=1):
            ack = await hub.publish(topic, "good", confirm=True)
            assert ack.offset is not None
            waiting = asyncio.ensure_future(
                hub.wait_acked(topic, str(ack.offset), "billing", timeout=10)
            )
            await asyncio.wait_for(seen.wait(), 5)
            await asyncio.sleep(0.2)
            assert not waiting.done()  # delivered, still pending: not settled
            release.set()
            assert await waiting == "acked"

            bad = await hub.publish(topic, "bad", confirm=True)
            assert await hub.wait_acked(topic, str(bad.offset), "billing", timeout=10) == "dead"

        # Nobody consumes: a Timeout; another group's position says nothing of this one's.
        late = await hub.publish(topic, "late", confirm=True)
        started = time.monotonic()
        with pytest.raises(herald.Timeout):
            await hub.wait_acked(topic, str(late.offset), "billing", timeout=0.3)
        assert time.monotonic() - started < 2
        with pytest.raises(herald.ConfigurationError, match="no consumer group 'shipping'"):
            await hub.wait_acked(topic, str(late.offset), "shipping")
        with pytest.raises(herald.ConfigurationError, match="entry id"):
            await hub.wait_acked(topic, "yesterday", "billing")
        with pytest.raises(herald.ConfigurationError, match="not durable"):
            await hub.wait_acked(f"{topic}-live", "1-0", "billing")


async def test_wait_acked(url: str, topic: str) -> None:
    await _wait_acked(url, topic)


async def test_wait_acked_on_a_cluster(cluster: LocalCluster, topic: str) -> None:
    await _wait_acked(cluster.url, topic)


async def test_wait_acked_finds_a_dead_letter_behind_many_others(url: str, topic: str) -> None:
    """Dead letters of other entries (or groups) stored between the entry and its own dead
    letter do not make it "acked": every one after the entry is looked at, a page at a time."""
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        ack = await hub.publish(topic, 1, confirm=True)
        offset = str(ack.offset)
        await hub.execute("XGROUP", "CREATE", f"herald:{{{topic}}}:s", "g", "$")  # past it
        dead = f"herald:{{{topic}}}.dead:s"
        async with hub.pipeline() as pipe:
            for _ in range(2500):
                pipe.queue("XADD", dead, "*", "herald-offset", "0-1", "herald-group", "other")
        await hub.execute("XADD", dead, "*", "herald-offset", offset, "herald-group", "g")
        assert await hub.wait_acked(topic, offset, "g", timeout=5) == "dead"


def test_wait_acked_from_threads(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        ack = hub.publish(topic, 1, confirm=True)
        with hub.consume(topic, "g", start="all") as c:
            msg = c.next(5)
            with pytest.raises(herald.Timeout):
                hub.wait_acked(topic, str(ack.offset), "g", timeout=0.2)
            msg.ack()
            assert hub.wait_acked(topic, str(ack.offset), "g", timeout=5) == "acked"


# -- persistence -----------------------------------------------------------------------------

_WARNING = "on a server without persistence"


async def test_durable_topics_on_a_server_without_persistence_are_warned_about(
    own_server: herald.EmbeddedServer, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if _WARNING in r.getMessage()]

    url = own_server.url
    with caplog.at_level(logging.WARNING, logger="herald"):
        async with herald.AsyncClient(url) as hub:  # AOF on: nothing to say
            await hub.declare(topic, durable=True)
            await hub.execute("CONFIG", "SET", "appendonly", "no")
            await hub.execute("CONFIG", "SET", "save", "3600 1")
        async with herald.AsyncClient(url) as hub:  # RDB save points: nothing either
            await hub.publish(topic, 1)
            await hub.execute("CONFIG", "SET", "save", "")
        assert warnings() == []
        async with herald.AsyncClient(url) as hub:  # no persistence, no durable topic used
            await hub.declare(f"{topic}.live", history=10)
            await hub.publish(f"{topic}.live", 1)
        assert warnings() == []
        async with herald.AsyncClient(url) as hub:  # a publish uses the durable topic
            await hub.publish(topic, 2)
            await hub.publish(topic, 3)
        assert len(warnings()) == 1
        assert repr(topic) in warnings()[0]
        assert "appendonly yes" in warnings()[0]
        caplog.clear()
        async with herald.AsyncClient(url) as hub:  # so does a declare, once per client
            await hub.declare(f"{topic}.2", durable=True)
            await hub.declare(f"{topic}.3", durable=True)
            async with hub.consume(topic, "g"):
                pass
        assert len(warnings()) == 1
        assert repr(f"{topic}.2") in warnings()[0]
        caplog.clear()
        async with herald.AsyncClient(url) as hub, hub.consume(topic, "g"):  # and a consumer
            pass
        assert len(warnings()) == 1
