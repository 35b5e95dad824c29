"""Durable topics: policies, publishing to the stream, consumer groups, acks, retention, sync API.

Faults (killed consumers and servers, poison messages, redelivery timing) are in
``test_consumer_faults.py``. Messages carry sequence numbers; tests count by them.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import herald
from herald import ConfigurationError, DurableMessage
from herald._core.streams import stream_key
from herald._server import ping

REDIS7 = os.environ.get("HERALD_REDIS7_URL", "redis://127.0.0.1:6379")


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def take(consumer: herald.Consumer, n: int, timeout: float = 5.0) -> list[DurableMessage]:
    return [await consumer.next(timeout) for _ in range(n)]


async def entries(hub: herald.AsyncClient, topic: str) -> list[tuple[str, dict[bytes, bytes]]]:
    reply = await hub.execute("XRANGE", stream_key(topic), "-", "+")
    return [(e[0].decode(), dict(zip(e[1][::2], e[1][1::2], strict=True))) for e in reply]


async def group_info(hub: herald.AsyncClient, topic: str) -> dict[str, dict[str, Any]]:
    reply = await hub.execute("XINFO", "GROUPS", stream_key(topic))
    out = {}
    for g in reply:
        info = {k.decode(): v for k, v in zip(g[::2], g[1::2], strict=True)}
        out[info["name"].decode()] = info
    return out


# -- publishing ------------------------------------------------------------------------------


async def test_publish_consume_ack(url: str, topic: str) -> None:
    n = 300
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        async with hub.consume(topic, "billing", ack_wait=5) as orders:
            acks = [await hub.publish(topic, {"seq": i}) for i in range(n)]
            assert all(isinstance(a, herald.PubAck) and not a.duplicate for a in acks)
            got = await take(orders, n)
            for msg in got:
                await msg.ack()
        assert [m.data["seq"] for m in got] == list(range(n))
        assert [m.offset for m in got] == [a.offset for a in acks if a]
        assert all(m.deliveries == 1 and m.topic == topic and m.id for m in got)
        assert orders.stats.acked == n
        assert orders.stats.delivered == n
        info = (await group_info(hub, topic))["billing"]
        assert info["pending"] == 0
        assert info["last-delivered-id"].decode() == got[-1].offset
        # The stream holds the frames a live subscriber would get, in field "m".
        stored = await entries(hub, topic)
        assert [fields[b"m"] for _, fields in stored] == [m.raw for m in got]


async def test_live_subscribers_of_a_durable_topic_receive_every_message(
    url: str, topic: str
) -> None:
    n = 500
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        await hub.declare(topic, durable=True)
        for i in range(n):
            # confirmed and fire-and-forget publishes alike
            ack = await hub.publish(topic, i, confirm=i % 2 == 0)
            assert (ack is not None and ack.receivers == 1) == (i % 2 == 0)
        live = [await sub.next(5) for _ in range(n)]
        assert [m.data for m in live] == list(range(n))
        stored = await entries(hub, topic)
        assert [fields[b"m"] for _, fields in stored] == [m.raw for m in live]
        async with hub.consume(topic, "late", start="all") as c:
            durable = await take(c, n)
        assert [m.id for m in durable] == [m.id for m in live]


async def test_fire_and_forget_publishes_are_all_stored(url: str, topic: str) -> None:
    n = 2000
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        for i in range(n):
            assert await hub.publish(topic, i, confirm=False) is None
        await hub.flush()
        assert await hub.execute("XLEN", stream_key(topic)) == n
        assert hub.stats.published == n
        assert hub.stats.publish_errors == 0


async def test_scripts_survive_script_flush(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        await hub.publish(topic, "one")
        await hub.execute("SCRIPT", "FLUSH")
        assert (await hub.publish(topic, "two", confirm=True)).offset
        await hub.execute("SCRIPT", "FLUSH")
        await hub.publish(topic, "three", confirm=False)
        await hub.flush()
        frames = [f[b"m"] for _, f in await entries(hub, topic)]
        assert len(frames) == 3
        assert frames[0].endswith(b"one")
        assert frames[1].endswith(b"two")
        assert frames[2].endswith(b"three")
        assert hub.stats.publish_errors == 0


async def test_dedup_window(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True, dedup_window=0.5)
        first = await hub.publish(topic, "order 1", msg_id="order-1", confirm=True)
        again = await hub.publish(topic, "order 1", msg_id="order-1", confirm=True)
        other = await hub.publish(topic, "order 2", msg_id="order-2", confirm=True)
        assert not first.duplicate
        assert again.duplicate
        assert again.offset == first.offset
        assert again.receivers == 0  # not published live again either
        assert not other.duplicate
        assert len(await entries(hub, topic)) == 2
        await asyncio.sleep(0.6)
        later = await hub.publish(topic, "order 1", msg_id="order-1", confirm=True)
        assert not later.duplicate
        assert later.offset != first.offset
        assert len(await entries(hub, topic)) == 3
        # A live topic ignores msg_id (a publisher cannot know a topic's policy).
        live = f"{topic}.live"
        await hub.publish(live, "x", msg_id="order-1")
        assert (await hub.publish(live, "x", msg_id="order-1", confirm=True)).offset is None
        with pytest.raises(ConfigurationError, match="msg_id"):
            await hub.publish(topic, "x", msg_id="")


async def test_dedup_window_zero_stores_every_publish(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True, dedup_window=0)
        a = await hub.publish(topic, 1, msg_id="same", confirm=True)
        b = await hub.publish(topic, 1, msg_id="same", confirm=True)
        assert a.offset != b.offset
        assert not b.duplicate


# -- policies --------------------------------------------------------------------------------


async def test_declare_conflicts_name_the_fields(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, herald.AsyncClient(url) as other:
        policy = await hub.declare(topic, durable=True, max_len=1000)
        assert policy == herald.TopicPolicy(durable=True, max_len=1000)
        # the same settings again: fine, from any client
        assert await other.declare(topic, durable=True, max_len=1000) == policy
        with pytest.raises(ConfigurationError, match=r"max_len=1000 \(not 5\)") as info:
            await other.declare(topic, durable=True, max_len=5, max_age=60)
        assert "max_age=None" in str(info.value)
        assert "update=True" in str(info.value)
        with pytest.raises(ConfigurationError, match="durable=True"):
            await other.declare(topic)
        assert (await hub.topics())[topic] == policy
        updated = await other.declare(topic, durable=True, max_len=5, update=True)
        assert (await hub.topics())[topic] == updated
        # The dead-letter topic was declared with it, durable.
        assert (await hub.topics())[f"{topic}.dead"] == herald.TopicPolicy(durable=True)


async def test_declare_refuses_options_that_need_a_durable_topic(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(ConfigurationError, match="durable"):
            await hub.declare(topic, max_len=5)
        with pytest.raises(ConfigurationError, match="durable"):
            await hub.declare(topic, max_age=1.0)
        with pytest.raises(ConfigurationError, match="durable"):
            await hub.declare(topic, trim_unacked=True)
        with pytest.raises(ConfigurationError, match="max_len"):
            await hub.declare(topic, durable=True, max_len=-1)
        with pytest.raises(ConfigurationError, match="max_age"):
            await hub.declare(topic, durable=True, max_age=0)
        with pytest.raises(ConfigurationError, match="dedup_window"):
            await hub.declare(topic, durable=True, dedup_window=-1)
        assert topic not in await hub.topics()


async def test_publishers_learn_the_policy_from_redis(url: str, topic: str) -> None:
    async with (
        herald.AsyncClient(url, policy_refresh=0.02) as publisher,
        herald.AsyncClient(url) as admin,
    ):
        assert await publisher.publish(topic, "live", confirm=True) == herald.PubAck(0)
        await admin.declare(topic, durable=True)

        async def stored() -> bool:
            ack = await publisher.publish(topic, "durable?", confirm=True)
            return ack.offset is not None

        deadline = time.monotonic() + 2
        while not await stored():
            assert time.monotonic() < deadline, "the publisher never saw the policy"
            await asyncio.sleep(0.02)


async def test_consuming_a_live_topic_is_refused(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(ConfigurationError, match="not durable"):
            await hub.consume(topic, "g")
        assert not hub._consumers


async def test_delete_topic_removes_keys_and_stops_its_consumers(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        c = await hub.consume(topic, "g")
        await hub.publish(topic, 1, msg_id="a")
        await take(c, 1)
        assert await hub.delete_topic(topic)
        assert topic not in await hub.topics()
        assert await hub.execute("EXISTS", stream_key(topic)) == 0
        assert await hub.execute("KEYS", f"herald:{{{topic}}}:*") == []
        with pytest.raises(herald.ClientClosed, match="deleted"):
            await c.next(5)
        assert c.closed
        assert await hub.execute("EXISTS", stream_key(topic)) == 0  # not recreated
        assert (await hub.publish(topic, 2, confirm=True)).offset is None  # live again
        assert not await hub.delete_topic(topic)


# -- consumer groups -------------------------------------------------------------------------


async def test_groups_get_everything_consumers_of_a_group_share_it(url: str, topic: str) -> None:
    n = 400
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        got: dict[str, list[int]] = {"a": [], "b": [], "audit": []}

        def handler(name: str) -> Callable[[DurableMessage], None]:
            return lambda msg: got[name].append(msg.data)

        workers = [
            await hub.consume(topic, "work", "a", handler=handler("a"), batch=10),
            await hub.consume(topic, "work", "b", handler=handler("b"), batch=10),
            await hub.consume(topic, "audit", handler=handler("audit")),
        ]
        for i in range(n):
            await hub.publish(topic, i, confirm=i % 50 == 0)
        await wait_until(lambda: sum(map(len, got.values())) == 2 * n, 10, "all delivered")
        for w in workers:
            await w.close()
        assert sorted(got["a"] + got["b"]) == list(range(n))  # a work queue: once each
        assert got["a"]
        assert got["b"]
        assert got["audit"] == list(range(n))  # in order within one consumer
        info = await group_info(hub, topic)
        assert info["work"]["pending"] == 0
        assert info["audit"]["pending"] == 0


async def test_start_positions_of_a_new_group(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        acks = [await hub.publish(topic, i, confirm=True) for i in range(3)]
        async with hub.consume(topic, "all", start="all") as c:
            assert [m.data for m in await take(c, 3)] == [0, 1, 2]
        async with hub.consume(topic, "from", start=acks[0].offset or "?") as c:
            assert [m.data for m in await take(c, 2)] == [1, 2]  # after the given entry
        async with hub.consume(topic, "new") as c:
            await hub.publish(topic, 3)
            assert [m.data for m in await take(c, 1)] == [3]
        # An existing group keeps its position whatever start says.
        async with hub.consume(topic, "new", start="all") as c:
            await hub.publish(topic, 4)
            assert [m.data for m in await take(c, 1)] == [4]
        with pytest.raises(ConfigurationError, match="invalid start"):
            await hub.consume(topic, "bad", start="yesterday")


async def test_iteration_acks_when_moving_on(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        for i in range(4):
            await hub.publish(topic, i)
        seen = []
        async with hub.consume(topic, "g", start="all") as c:
            async for msg in c:
                seen.append(msg.data)
                if msg.data == 1:
                    await msg.nak(delay=60)  # settled by hand: not acked on moving on
                if msg.data == 3:
                    break  # leaving the block normally acks the last one too
        assert seen == [0, 1, 2, 3]
        assert c.stats.acked == 3
        assert c.stats.naked == 1
        info = (await group_info(hub, topic))["g"]
        assert info["pending"] == 1  # the nak'd one, waiting out its delay

        await hub.publish(topic, 4)

        failing = hub.consume(topic, "g")

        async def fail_on_first() -> None:
            async with failing:
                async for _ in failing:
                    raise RuntimeError("boom")  # an error: message 4 is not acked

        with pytest.raises(RuntimeError, match="boom"):
            await fail_on_first()
        assert failing.stats.acked == 0
        assert (await group_info(hub, topic))["g"]["pending"] == 2


async def test_handler_acks_on_return_and_naks_with_backoff_on_error(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        attempts: dict[int, list[float]] = {}
        done = asyncio.Event()

        async def handler(msg: DurableMessage) -> None:
            attempts.setdefault(msg.data, []).append(time.monotonic())
            if msg.data == 1 and msg.deliveries < 3:
                raise ValueError("not yet")
            if len(attempts) == 3 and len(attempts[1]) == 3:
                done.set()

        c = await hub.consume(topic, "g", handler=handler, ack_wait=2, backoff=[0.1, 0.3])
        for i in range(3):
            await hub.publish(topic, i)
        await asyncio.wait_for(done.wait(), 5)
        await c.close()
        assert [len(attempts[i]) for i in range(3)] == [1, 3, 1]
        first, second, third = attempts[1]
        assert second - first >= 0.1
        assert third - second >= 0.3
        assert c.stats.handler_errors == 2
        assert c.stats.naked == 2
        assert c.stats.acked == 3
        assert (await group_info(hub, topic))["g"]["pending"] == 0


async def test_max_ack_pending_limits_unsettled_messages(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        for i in range(20):
            await hub.publish(topic, i)
        async with hub.consume(topic, "g", start="all", max_ack_pending=5) as c:
            held = await take(c, 5)
            with pytest.raises(herald.Timeout):
                await c.next(0.3)
            await held[0].ack()
            assert (await c.next(2)).data == 5
            with pytest.raises(herald.Timeout):
                await c.next(0.3)
            for m in held[1:]:
                await m.ack()
            assert [m.data for m in await take(c, 4)] == [6, 7, 8, 9]


async def test_a_consumer_restarted_with_its_name_resumes_its_pending(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        await hub.execute("XGROUP", "CREATE", stream_key(topic), "g", "$", "MKSTREAM")
        for i in range(5):
            await hub.publish(topic, i)
        # "worker-1" read three entries, then its process died.
        await hub.execute(
            "XREADGROUP", "GROUP", "g", "worker-1", "COUNT", 3, "STREAMS", stream_key(topic), ">"
        )
        async with hub.consume(topic, "g", "worker-1", ack_wait=30) as c:
            got = await take(c, 5, timeout=2)  # at once: not after ack_wait
        assert [(m.data, m.deliveries) for m in got] == [(0, 2), (1, 2), (2, 2), (3, 1), (4, 1)]


async def test_close_hands_unsettled_messages_back_at_once(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        for i in range(20):
            await hub.publish(topic, i)
        a = await hub.consume(topic, "g", "a", start="all", batch=10)
        first, _second = await take(a, 2)
        await first.ack()  # second: taken, not settled
        await wait_until(lambda: a.pending == 8, 2, "a batch of 10 read")
        await a.close()
        # b waits 30 s before reclaiming anything stuck, yet gets a's messages at once.
        started = time.monotonic()
        async with hub.consume(topic, "g", "b", ack_wait=30) as b:
            got = await take(b, 19, timeout=3)
            for m in got:
                await m.ack()
        assert time.monotonic() - started < 3
        assert sorted(m.data for m in got) == list(range(1, 20))
        deliveries = {m.data: m.deliveries for m in got}
        assert deliveries[1] == 2  # a had it in hand
        assert all(deliveries[i] == 1 for i in range(2, 20))  # buffered only: not a delivery
        consumers = await hub.execute("XINFO", "CONSUMERS", stream_key(topic), "g")
        # a held entries when it closed, so it stayed (for the others' clean-up); now it holds
        # nothing. b, closed with nothing pending, left the group.
        assert [(c[1], c[3]) for c in consumers] == [(b"a", 0)]


async def test_idle_consumers_are_deleted_unless_they_hold_entries(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        key = stream_key(topic)
        await hub.execute("XGROUP", "CREATE", key, "g", "$", "MKSTREAM")
        await hub.execute("XGROUP", "CREATECONSUMER", key, "g", "idle-empty")
        await hub.publish(topic, "held")
        await hub.execute("XREADGROUP", "GROUP", "g", "idle-holding", "STREAMS", key, ">")

        def names(reply: list[list[Any]]) -> set[str]:
            return {c[1].decode() for c in reply}

        async with hub.consume(topic, "g", "live", delete_idle_after=0.3, ack_wait=30) as c:
            deadline = time.monotonic() + 3
            while "idle-empty" in names(await hub.execute("XINFO", "CONSUMERS", key, "g")):
                assert time.monotonic() < deadline, "idle consumer never deleted"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            assert names(await hub.execute("XINFO", "CONSUMERS", key, "g")) == {
                "idle-holding",
                "live",
            }
            assert c.name == "live"


def test_default_consumer_names_are_unique_per_process() -> None:
    import os
    import socket

    from herald._durable.setup import default_consumer_name

    a, b = default_consumer_name(), default_consumer_name()
    assert a != b
    assert a.startswith(f"{socket.gethostname()}-{os.getpid()}-")


# -- retention -------------------------------------------------------------------------------


async def test_trimming_never_removes_unacked_entries(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True, max_len=10)
        acks = [await hub.publish(topic, i, confirm=True) for i in range(50)]
        async with hub.consume(topic, "slow", start="all", batch=20) as c:
            held = await take(c, 20)
            for m in held[:15]:
                await m.ack(confirm=True)
            # An idle group that read nothing yet pins everything after its position.
            assert await hub.trim(topic) == 15  # only what every group acked
            left = [e[0] for e in await entries(hub, topic)]
            assert left == [a.offset for a in acks[15:]]
            for m in held[15:]:
                await m.ack(confirm=True)
            assert await hub.trim(topic) == 5
            assert len(await entries(hub, topic)) == 30  # 30 never delivered: kept

        # Another group created from the start holds everything it has not acked.
        async with hub.consume(topic, "new-group", start="all") as c2:
            await take(c2, 1)
            assert await hub.trim(topic) == 0

        await hub.declare(topic, durable=True, max_len=10, trim_unacked=True, update=True)
        assert await hub.trim(topic) == 20
        assert [e[0] for e in await entries(hub, topic)] == [a.offset for a in acks[40:]]


async def test_trimming_by_age(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True, max_age=0.3)
        for i in range(5):
            await hub.publish(topic, i)
        assert await hub.trim(topic) == 0
        await asyncio.sleep(0.4)
        last = await hub.publish(topic, 5, confirm=True)
        assert await hub.trim(topic) == 5
        assert [e[0] for e in await entries(hub, topic)] == [last.offset]


async def test_publishers_trim_periodically(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True, max_len=10)
        for i in range(250):
            await hub.publish(topic, i)
        # every 100 publishes (or second) the publish script trims as well
        assert await hub.execute("XLEN", stream_key(topic)) <= 60


# -- the threaded client ---------------------------------------------------------------------


def test_sync_consume_iterator_and_handler(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        with hub.consume(topic, "iter", ack_wait=5) as c:
            acks = [hub.publish(topic, i) for i in range(50)]
            assert all(a is not None and a.offset for a in acks)
            assert hub.publish(topic, 50, confirm=False) is None
            got = []
            for msg in c:
                got.append(msg.data)
                if msg.data == 50:
                    break
        assert got == list(range(51))
        assert c.stats.acked == 51
        assert c.closed

        received: list[int] = []
        threads: set[str] = set()
        done = threading.Event()

        def handler(msg: DurableMessage) -> None:
            threads.add(threading.current_thread().name)
            if msg.data == 3 and msg.deliveries == 1:
                raise ValueError("once")
            received.append(msg.data)
            if len(received) == 51:
                done.set()

        h = hub.consume(topic, "handler", start="all", handler=handler, backoff=[0.05])
        assert done.wait(5)
        assert sorted(received) == list(range(51))
        assert threads == {f"herald-handler-{topic}"}
        assert h.stats.naked == 1
        assert h.stats.handler_errors == 1
    assert h.closed


def test_sync_messages_settle_from_the_caller_thread(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        c = hub.consume(topic, "g", ack_wait=5)
        for i in range(3):
            hub.publish(topic, i)
        a, b, d = c.next(5), c.next(5), c.next(5)
        a.ack(confirm=True)
        b.nak(delay=0)
        d.term("no thanks")
        again = c.next(5)
        assert (again.data, again.deliveries) == (1, 2)
        again.in_progress()
        again.ack()
        dead = hub.consume(f"{topic}.dead", "inspect", start="all")
        letter = dead.next(5)
        assert letter.data == 2
        assert letter.headers["herald-reason"] == "no thanks"
        c.close()
        dead.close()


# -- Redis 7 ---------------------------------------------------------------------------------


@pytest.mark.skipif(not ping(6379), reason="no Redis on 127.0.0.1:6379")
async def test_durable_topics_on_redis7(topic: str) -> None:
    async with herald.AsyncClient(REDIS7, policy_refresh=0) as hub:
        try:
            await hub.declare(topic, durable=True, max_len=5)
            async with hub.consume(topic, "g", ack_wait=0.2, max_deliver=2) as c:
                acks = [await hub.publish(topic, i, confirm=True) for i in range(8)]
                got = await take(c, 8)
                assert [m.offset for m in got] == [a.offset for a in acks]
                for m in got[1:]:
                    await m.ack()
                await got[0].nak()
                again = await c.next(3)
                assert (again.data, again.deliveries) == (0, 2)
                await again.term("done")
                assert await hub.trim(topic) == 3
            letters = hub.consume(f"{topic}.dead", "g", start="all")
            async with letters:
                assert (await letters.next(3)).headers["herald-reason"] == "done"
        finally:
            await hub.delete_topic(topic)
            await hub.delete_topic(f"{topic}.dead")
            if not await hub.execute("HLEN", "herald:{herald}:topics"):
                await hub.execute("DEL", "herald:{herald}:topics:version")


async def test_a_closed_consumer_takes_nothing_published_after(url: str, topic: str) -> None:
    """Closing ends the consumer's blocked read on the server: what is published next stays
    in the group for others instead of going pending to a consumer that is gone."""
    async with herald.AsyncClient(url) as hub:
        # A trimmed topic: the publishers' trim steps shift the timing so that, without the
        # unblock, the race shows in every round.
        await hub.declare(topic, durable=True, max_len=100, trim_unacked=True)
        stream = f"herald:{{{topic}}}:s"
        for i in range(3):
            group = f"g{i}"
            await hub.execute("XGROUP", "CREATE", stream, group, "$", "MKSTREAM")
            for n in range(10):
                await hub.publish(topic, n, confirm=False)
            async with hub.consume(topic, group, "c") as c:
                for _ in range(10):
                    await (await c.next(5)).ack()
                # ... and its next XREADGROUP ... BLOCK waits on the server
            for n in range(2000):
                await hub.publish(topic, n, confirm=False)
            await hub.flush()
            pending = await hub.execute("XPENDING", stream, group)
            assert pending[0] == 0, f"round {i}: {pending}"
