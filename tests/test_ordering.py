"""Ordering: one consumer sees a group's messages in stream order; ``key=`` with
``ordered_by_key`` keeps order per key while different keys are handled concurrently."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict

import pytest

import herald
from herald import ConfigurationError, DurableMessage
from herald._core.streams import stream_key
from herald._durable.ordered import Lanes

KEYS = 4
PER_KEY = 500


async def publish_keyed(hub: herald.AsyncClient, topic: str) -> None:
    """4 keys x 500 messages, interleaved: {"key": k, "seq": i}."""
    for i in range(PER_KEY):
        for k in range(KEYS):
            await hub.publish(topic, {"key": k, "seq": i}, key=f"customer-{k}", confirm=False)
    await hub.flush()


def check_order(seen: dict[int, list[int]]) -> None:
    for k in range(KEYS):
        assert seen[k] == list(range(PER_KEY)), f"key {k} out of order"


def test_lanes_hand_each_key_to_one_worker_in_order() -> None:
    lanes: Lanes[int] = Lanes()
    assert lanes.put("a", 1)  # a new lane: give "a" to a worker
    assert not lanes.put("a", 2)  # queued behind 1
    assert lanes.put("b", 3)
    assert lanes.take("a") == 1
    assert not lanes.put("a", 4)  # its worker is still on it
    assert [lanes.take("a"), lanes.take("a"), lanes.take("a")] == [2, 4, None]
    assert lanes.put("a", 5)  # the lane was closed: a worker must take it again
    assert len(lanes) == 2


async def test_one_consumer_gets_a_groups_messages_in_stream_order(url: str, topic: str) -> None:
    n = 2000
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        got: list[int] = []
        all_in = asyncio.Event()

        def handler(msg: DurableMessage) -> None:
            got.append(msg.data)
            if len(got) == n:
                all_in.set()

        c = await hub.consume(topic, "g", start="all", handler=handler)
        for i in range(n):
            await hub.publish(topic, i, confirm=i % 100 == 0)
        await asyncio.wait_for(all_in.wait(), 10)
        await c.close()
        assert got == list(range(n))
        iterated: list[int] = []
        async with hub.consume(topic, "iterating", start="all", batch=7) as it:
            async for msg in it:  # acked as the loop moves on
                iterated.append(msg.data)
                if len(iterated) == n:
                    break
        assert iterated == list(range(n))


async def test_key_is_stored_with_the_entry(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as live:
        await hub.declare(topic, durable=True)
        ack = await hub.publish(topic, "x", key="customer-42", msg_id="m1", confirm=True)
        dup = await hub.publish(topic, "x", key="customer-42", msg_id="m1", confirm=True)
        assert dup.duplicate  # idempotent with a key too
        assert dup.offset == ack.offset
        await hub.publish(topic, "y")
        ((_, fields), (_, plain)) = await hub.execute("XRANGE", stream_key(topic), "-", "+")
        assert dict(zip(fields[::2], fields[1::2], strict=True))[b"k"] == b"customer-42"
        assert b"k" not in plain[::2]
        assert (await live.next(5)).data == "x"  # published live as usual
        async with hub.consume(topic, "g", start="all") as c:
            first, second = await c.next(5), await c.next(5)
        assert (first.key, second.key) == ("customer-42", None)
        # live topics ignore the key, as they ignore msg_id
        assert (await hub.publish(f"{topic}.live", 1, key="k", confirm=True)).offset is None
        with pytest.raises(ConfigurationError, match="key"):
            await hub.publish(topic, 1, key="")


async def test_ordered_by_key_keeps_order_per_key_and_runs_keys_concurrently(
    url: str, topic: str
) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        await publish_keyed(hub, topic)
        seen: dict[int, list[int]] = defaultdict(list)
        slept = 0.0
        done = asyncio.Event()
        active: set[int] = set()

        async def handler(msg: DurableMessage) -> None:
            nonlocal slept
            k = msg.data["key"]
            assert k not in active, "two messages of one key at once"
            active.add(k)
            delay = random.uniform(0, 0.002)
            slept += delay
            await asyncio.sleep(delay)
            seen[k].append(msg.data["seq"])
            active.discard(k)
            if sum(map(len, seen.values())) == KEYS * PER_KEY:
                done.set()

        start = time.monotonic()
        c = await hub.consume(
            topic, "g", start="all", handler=handler, ordered_by_key=True, concurrency=KEYS
        )
        await asyncio.wait_for(done.wait(), 30)
        elapsed = time.monotonic() - start
        await c.close()
    check_order(seen)
    # One at a time takes at least the sum of the sleeps (a sleep never ends early); four keys
    # at once about a quarter of it (0.4 measured, with the event loop's timer overhead).
    assert elapsed < slept * 0.75, (elapsed, slept)
    assert c.stats.acked == KEYS * PER_KEY


def test_ordered_by_key_with_threads(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        for i in range(PER_KEY):
            for k in range(KEYS):
                hub.publish(topic, {"key": k, "seq": i}, key=f"customer-{k}", confirm=False)
        hub.flush()
        seen: dict[int, list[int]] = defaultdict(list)
        lock = threading.Lock()
        slept = 0.0
        done = threading.Event()
        threads: set[str] = set()
        active: set[int] = set()

        def handler(msg: DurableMessage) -> None:
            nonlocal slept
            with lock:
                assert msg.data["key"] not in active, "two messages of one key at once"
                active.add(msg.data["key"])
            delay = random.uniform(0, 0.002)
            time.sleep(delay)
            with lock:
                active.discard(msg.data["key"])
                slept += delay
                threads.add(threading.current_thread().name)
                seen[msg.data["key"]].append(msg.data["seq"])
                if sum(map(len, seen.values())) == KEYS * PER_KEY:
                    done.set()

        start = time.monotonic()
        c = hub.consume(
            topic, "g", start="all", handler=handler, ordered_by_key=True, concurrency=KEYS
        )
        assert done.wait(30)
        elapsed = time.monotonic() - start
        c.close()
    check_order(seen)
    assert elapsed < slept * 0.75, (elapsed, slept)  # sequentially: at least 1.0
    assert len(threads) > 1


async def test_a_failing_message_holds_its_key_and_is_retried_in_place(
    url: str, topic: str
) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        for i in range(6):
            await hub.publish(topic, i, key="a" if i < 3 else "b", confirm=False)
        await hub.publish(topic, "poison", key="c")
        await hub.publish(topic, "after poison", key="c")
        order: list[object] = []
        attempts: dict[object, int] = defaultdict(int)
        finished = asyncio.Event()

        def handler(msg: DurableMessage) -> None:
            attempts[msg.data] += 1
            if msg.data == 1 and attempts[1] < 3:  # fails twice, then works
                raise RuntimeError("not yet")
            if msg.data == "poison":
                raise ValueError("never")
            order.append(msg.data)
            if msg.data == "after poison":
                finished.set()

        c = await hub.consume(
            topic,
            "g",
            start="all",
            handler=handler,
            ordered_by_key=True,
            concurrency=3,
            backoff=[0.05],
            max_deliver=3,
            ack_wait=5,
        )
        await asyncio.wait_for(finished.wait(), 10)
        await asyncio.sleep(0.1)
        await c.close()
        assert [x for x in order if x in (0, 1, 2)] == [0, 1, 2]  # 2 waited for 1's retries
        assert [x for x in order if x in (3, 4, 5)] == [3, 4, 5]  # another key did not wait
        assert order.index(3) < order.index(1)
        assert attempts[1] == 3
        assert attempts["poison"] == 3  # max_deliver attempts, then dead-lettered
        (dead,) = await hub.dead_letters(topic)
        assert dead.message.data == "poison"
        assert "ValueError: never" in dead.reason
        assert c.stats.acked == 7
        assert c.stats.redelivered == 0  # retried in place, not redelivered


def test_a_failing_message_is_retried_in_place_with_threads(url: str, topic: str) -> None:
    """The same on the threaded client's lanes: the retry holds its key (slept, the lease
    kept), the last allowed delivery is dead-lettered, and the message's delivery count grows
    with each attempt."""
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        for i in range(3):
            hub.publish(topic, i, key="a", confirm=False)
        hub.publish(topic, "poison", key="c")
        hub.publish(topic, "after poison", key="c")
        order: list[object] = []
        deliveries: dict[object, list[int]] = defaultdict(list)
        lock = threading.Lock()
        finished = threading.Event()

        def handler(msg: DurableMessage) -> None:
            with lock:
                deliveries[msg.data].append(msg.deliveries)
                if msg.data == 1 and len(deliveries[1]) < 3:  # fails twice, then works
                    raise RuntimeError("not yet")
                if msg.data == "poison":
                    raise ValueError("never")
                order.append(msg.data)
            if msg.data == "after poison":
                finished.set()

        c = hub.consume(
            topic,
            "g",
            start="all",
            handler=handler,
            ordered_by_key=True,
            concurrency=2,
            backoff=[0.05],
            max_deliver=3,
            ack_wait=5,
        )
        assert finished.wait(10)
        time.sleep(0.1)
        c.close()
        assert [x for x in order if x in (0, 1, 2)] == [0, 1, 2]  # 2 waited for 1's retries
        assert deliveries[1] == [1, 2, 3]
        assert deliveries["poison"] == [1, 2, 3]  # max_deliver attempts, then dead-lettered
        (dead,) = hub.dead_letters(topic)
        assert dead.message.data == "poison"
        assert "handler failed on delivery 3 of 3: ValueError: never" in dead.reason
        assert c.stats.handler_errors == 5
        assert c.stats.acked == 4
        assert c.stats.redelivered == 0  # retried in place, not redelivered


async def test_concurrency_without_order(url: str, topic: str) -> None:
    n = 200
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        for i in range(n):
            await hub.publish(topic, i, confirm=False)
        running = peak = 0
        got: list[int] = []
        all_in = asyncio.Event()

        async def handler(msg: DurableMessage) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.002)
            running -= 1
            got.append(msg.data)
            if len(got) == n:
                all_in.set()

        c = await hub.consume(topic, "g", start="all", handler=handler, concurrency=8)
        await asyncio.wait_for(all_in.wait(), 10)
        await c.close()
        assert sorted(got) == list(range(n))
        assert peak == 8
        with pytest.raises(ConfigurationError, match="concurrency"):
            hub.consume(topic, "g", concurrency=0)
