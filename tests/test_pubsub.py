"""Live publish/subscribe with the AsyncClient against a real server."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

import herald
from herald import EmbeddedServer, Message, MessageTooLarge
from herald._core.wire import HEAD_SIZE


async def numsub(hub: herald.AsyncClient, channel: str) -> int:
    reply = await hub.execute("PUBSUB", "NUMSUB", channel)
    assert reply[0] == channel.encode()
    return int(reply[1])


async def publish_calls(hub: herald.AsyncClient) -> int:
    """How many PUBLISH commands the server has run since it started."""
    info: bytes = await hub.execute("INFO", "commandstats")
    found = re.search(rb"cmdstat_publish:calls=(\d+)", info)
    return int(found.group(1)) if found else 0


# -- channels and patterns -------------------------------------------------------------------


async def test_channel_round_trip(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        before = time.time()
        assert (
            await hub.publish(topic, {"title": "3:1", "n": [1, 2]}, confirm=True)
        ).receivers == 1
        after = time.time()
        msg = await sub.next(timeout=2)
        assert isinstance(msg, Message)
        assert msg.topic == topic
        assert msg.data == {"title": "3:1", "n": [1, 2]}
        assert msg.pattern is None
        assert msg.headers == {}
        assert msg.content_type == "application/json"
        assert not msg.foreign
        assert msg.decode_error is None
        assert msg.offset is None
        assert msg.timestamp is not None
        assert before - 0.001 <= msg.timestamp <= after + 0.001
        assert sub.stats.delivered == 1
        assert hub.stats.published == 1


async def test_message_ids_are_unique_and_sequential(url: str, topic: str) -> None:
    async with (
        herald.AsyncClient(url) as a,
        herald.AsyncClient(url) as b,
        a.subscribe(topic) as sub,
    ):
        for hub in (a, a, b):
            await hub.publish(topic, "x", confirm=True)
        ids = [(await sub.next(timeout=2)).id for _ in range(3)]
    parsed = []
    for i in ids:
        assert i is not None
        found = re.fullmatch(r"([0-9a-f]{16})-(\d+)", i)
        assert found, i
        parsed.append((found.group(1), int(found.group(2))))
    assert parsed[0][0] == parsed[1][0] != parsed[2][0]  # one publisher id per client
    assert parsed[1][1] == parsed[0][1] + 1
    assert len(set(ids)) == 3


async def test_pattern_subscription_sets_msg_pattern(url: str, topic: str) -> None:
    pattern = f"{topic}.*"
    async with herald.AsyncClient(url) as hub, hub.subscribe(pattern) as sub:
        assert (await hub.publish(f"{topic}.a", 1, confirm=True)).receivers == 1
        assert (await hub.publish(f"{topic}.b.c", 2, confirm=True)).receivers == 1
        assert (await hub.publish(f"{topic}", 3, confirm=True)).receivers == 0
        assert (await hub.publish(f"{topic}x.a", 4, confirm=True)).receivers == 0
        first, second = await sub.next(timeout=2), await sub.next(timeout=2)
        assert (first.topic, first.data, first.pattern) == (f"{topic}.a", 1, pattern)
        assert (second.topic, second.data, second.pattern) == (f"{topic}.b.c", 2, pattern)
        with pytest.raises(herald.Timeout):
            await sub.next(timeout=0.05)


async def test_one_subscription_over_channels_and_patterns(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(f"{topic}.a", f"{topic}.p.*") as sub:
        await hub.publish(f"{topic}.a", "a", confirm=True)
        await hub.publish(f"{topic}.p.1", "p", confirm=True)
        await hub.publish(f"{topic}.b", "b", confirm=True)
        got = [await sub.next(timeout=2) for _ in range(2)]
        assert [(m.topic, m.data, m.pattern) for m in got] == [
            (f"{topic}.a", "a", None),
            (f"{topic}.p.1", "p", f"{topic}.p.*"),
        ]
        assert sub.pending == 0


# -- payloads --------------------------------------------------------------------------------

PAYLOADS: list[tuple[Any, Any, str]] = [
    ({"a": 1, "b": [True, None, 1.5]}, {"a": 1, "b": [True, None, 1.5]}, "application/json"),
    ([1, "two"], [1, "two"], "application/json"),
    (42, 42, "application/json"),
    (None, None, "application/json"),
    ("héllo wörld", "héllo wörld", "text/plain"),
    ("", "", "text/plain"),
    (b"\x00\xff raw", b"\x00\xff raw", "application/octet-stream"),
    (b"", b"", "application/octet-stream"),
    (bytearray(b"ba"), b"ba", "application/octet-stream"),
    (memoryview(b"mv"), b"mv", "application/octet-stream"),
    # A text payload that looks like a frame must stay text.
    ("\xffHR", "\xffHR", "text/plain"),
]


@pytest.mark.parametrize(("sent", "received", "content_type"), PAYLOADS)
async def test_payload_types(
    url: str, topic: str, sent: Any, received: Any, content_type: str
) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        await hub.publish(topic, sent, confirm=True)
        msg = await sub.next(timeout=2)
        assert msg.data == received
        assert type(msg.data) is type(received)
        assert msg.content_type == content_type
        assert not msg.foreign


async def test_msgpack_codec(url: str, topic: str) -> None:
    async with (
        herald.AsyncClient(url, codec="msgpack") as pub,
        herald.AsyncClient(url) as hub,
        hub.subscribe(topic) as sub,
    ):
        await pub.publish(topic, {"blob": b"\x00\x01", "n": 7}, confirm=True)
        await pub.publish(topic, "text stays text", confirm=True)
        msg = await sub.next(timeout=2)
        # msgpack keeps bytes as bytes, which JSON could not.
        assert msg.data == {"blob": b"\x00\x01", "n": 7}
        assert msg.content_type == "application/msgpack"
        msg = await sub.next(timeout=2)
        assert (msg.data, msg.content_type) == ("text stays text", "text/plain")


def test_unknown_codec_is_a_configuration_error(url: str) -> None:
    with pytest.raises(herald.ConfigurationError, match="codec"):
        herald.AsyncClient(url, codec="xml")  # type: ignore[arg-type]


async def test_headers_round_trip(url: str, topic: str) -> None:
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "é": "ü"}
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        await hub.publish(topic, {"x": 1}, headers=headers, confirm=True)
        await hub.publish(topic, b"raw", headers={"k": "v"})
        await hub.publish(topic, "none", headers={})
        first, second, third = [await sub.next(timeout=2) for _ in range(3)]
        assert (first.data, first.headers) == ({"x": 1}, headers)
        assert (second.data, second.headers) == (b"raw", {"k": "v"})
        assert (third.data, third.headers) == ("none", {})


async def test_headers_must_be_strings(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(TypeError, match="headers"):
            await hub.publish(topic, 1, headers={"n": 1})  # type: ignore[dict-item]
        assert hub.stats.published == 0


# -- confirm and fan-out ---------------------------------------------------------------------


async def test_confirm_counts_receiving_connections(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as a, herald.AsyncClient(url) as b:
        assert (await a.publish(topic, 1, confirm=True)).receivers == 0
        assert await a.publish(topic, 1) is None
        async with a.subscribe(topic):
            assert (await a.publish(topic, 1, confirm=True)).receivers == 1
            # A second subscription of the same client shares its connection.
            async with a.subscribe(topic):
                assert (await a.publish(topic, 1, confirm=True)).receivers == 1
                async with b.subscribe(topic):
                    assert (await a.publish(topic, 1, confirm=True)).receivers == 2
                    async with b.subscribe(f"{topic}*"):  # a pattern counts on its own
                        assert (await a.publish(topic, 1, confirm=True)).receivers == 3
        assert (await a.publish(topic, 1, confirm=True)).receivers == 0


async def test_subscriptions_sharing_a_channel_each_get_every_message(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        subs = [await hub.subscribe(topic) for _ in range(3)]
        assert await numsub(hub, topic) == 1  # one server subscription for all three
        for i in range(5):
            await hub.publish(topic, i)
        await hub.flush()
        for sub in subs:
            assert [(await sub.next(timeout=2)).data for _ in range(5)] == [0, 1, 2, 3, 4]
            assert sub.pending == 0
        # Closing one leaves the others subscribed on the server.
        await subs[0].close()
        assert await numsub(hub, topic) == 1
        assert (await hub.publish(topic, "after", confirm=True)).receivers == 1
        for sub in subs[1:]:
            assert (await sub.next(timeout=2)).data == "after"
        assert subs[0].pending == 0
        for sub in subs[1:]:
            await sub.close()
        assert await numsub(hub, topic) == 0


# -- unsubscribe -----------------------------------------------------------------------------


async def test_close_unsubscribes_on_the_server(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        sub = hub.subscribe(topic)
        assert await numsub(hub, topic) == 0
        await sub.start()
        assert await numsub(hub, topic) == 1
        await sub.close()
        assert sub.closed
        assert await numsub(hub, topic) == 0
        assert (await hub.publish(topic, 1, confirm=True)).receivers == 0
        assert sub.pending == 0
        with pytest.raises(herald.ClientClosed):
            await sub.next(timeout=1)


async def test_close_pattern_unsubscribes_on_the_server(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        before = int(await hub.execute("PUBSUB", "NUMPAT"))
        async with hub.subscribe(f"{topic}.*"):
            assert int(await hub.execute("PUBSUB", "NUMPAT")) == before + 1
        assert int(await hub.execute("PUBSUB", "NUMPAT")) == before
        assert (await hub.publish(f"{topic}.x", 1, confirm=True)).receivers == 0


async def test_iteration_ends_after_buffered_messages(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        sub = await hub.subscribe(topic)
        for i in range(3):
            await hub.publish(topic, i)
        await hub.publish(topic, 3, confirm=True)
        # confirm=True proves the server took it; wait until the subscriber's socket delivered it.
        async with asyncio.timeout(5):
            while sub.pending < 4:  # noqa: ASYNC110 - polling a counter under a deadline
                await asyncio.sleep(0.005)
        await sub.close()
        assert [m.data async for m in sub] == [0, 1, 2, 3]


async def test_async_for_and_break(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        for i in range(5):
            await hub.publish(topic, i)
        got = []
        async for msg in sub:
            got.append(msg.data)
            if len(got) == 5:
                break
        assert got == [0, 1, 2, 3, 4]


async def test_await_subscribe_form(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        sub = await hub.subscribe(topic)
        try:
            assert isinstance(sub, herald.Subscription)
            assert await numsub(hub, topic) == 1
            assert (await hub.publish(topic, "hi", confirm=True)).receivers == 1
            assert (await sub.next(timeout=2)).data == "hi"
        finally:
            await sub.close()
        assert await numsub(hub, topic) == 0


async def test_client_close_ends_subscriptions(url: str, topic: str) -> None:
    hub = herald.AsyncClient(url)
    await hub.connect()
    sub = await hub.subscribe(topic)
    await hub.close()
    with pytest.raises(herald.ClientClosed):
        await sub.next(timeout=1)
    with pytest.raises(herald.ClientClosed):
        hub.subscribe(topic)
    async with herald.AsyncClient(url) as other:
        assert await numsub(other, topic) == 0


async def test_next_timeout(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        start = time.monotonic()
        with pytest.raises(herald.Timeout) as info:
            await sub.next(timeout=0.1)
        assert 0.09 <= time.monotonic() - start < 1
        assert info.value.timeout == 0.1
        assert isinstance(info.value, TimeoutError)
        # The subscription still works after a timeout.
        await hub.publish(topic, "late", confirm=True)
        assert (await sub.next(timeout=2)).data == "late"


# -- handlers --------------------------------------------------------------------------------


async def test_handler_function(url: str, topic: str) -> None:
    got: list[Any] = []
    done = asyncio.Event()

    def handler(msg: Message) -> None:
        got.append(msg.data)
        if len(got) == 20:
            done.set()

    async with herald.AsyncClient(url) as hub:
        sub = await hub.subscribe(topic, handler=handler)
        for i in range(20):
            await hub.publish(topic, i)
        async with asyncio.timeout(2):
            await done.wait()
        await sub.close()
        assert got == list(range(20))
        assert sub.stats.delivered == 20
        assert sub.stats.handler_errors == 0


async def test_handler_coroutine_function(url: str, topic: str) -> None:
    got: list[Any] = []
    done = asyncio.Event()

    async def handler(msg: Message) -> None:
        await asyncio.sleep(0)  # yields between messages: they must still come in order
        got.append((msg.topic, msg.data))
        if len(got) == 20:
            done.set()

    async with herald.AsyncClient(url) as hub, hub.subscribe(f"{topic}.*", handler=handler):
        for i in range(20):
            await hub.publish(f"{topic}.{i % 3}", i)
        async with asyncio.timeout(2):
            await done.wait()
    assert got == [(f"{topic}.{i % 3}", i) for i in range(20)]


@pytest.mark.parametrize("is_coroutine", [False, True])
async def test_handler_errors_are_counted_and_do_not_stop_the_subscription(
    url: str, topic: str, is_coroutine: bool, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[int] = []
    done = asyncio.Event()

    def work(msg: Message) -> None:
        got.append(msg.data)
        if len(got) == 11:
            done.set()
        if msg.data % 3 == 0:
            raise RuntimeError(f"boom {msg.data}")

    async def coroutine_handler(msg: Message) -> None:
        work(msg)

    handler = coroutine_handler if is_coroutine else work
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic, handler=handler) as sub:
        # The last message, after the error on 9, proves the subscription outlived the errors.
        for i in range(11):
            await hub.publish(topic, i)
        async with asyncio.timeout(2):
            await done.wait()
        assert not sub.closed
    assert got == list(range(11))
    assert sub.stats.handler_errors == 4  # 0, 3, 6, 9
    assert sum("boom" in (r.exc_text or "") for r in caplog.records) == 4


async def test_handler_returning_an_awaitable_is_awaited(url: str, topic: str) -> None:
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def finish(msg: Message) -> None:
        done.set_result(msg.data)

    def handler(msg: Message) -> Any:
        return finish(msg)  # a lambda-style handler that returns a coroutine

    async with herald.AsyncClient(url) as hub, hub.subscribe(topic, handler=handler):
        await hub.publish(topic, "via coroutine", confirm=True)
        assert await asyncio.wait_for(done, 2) == "via coroutine"


async def test_a_handler_result_to_await_keeps_the_order_of_a_batch(url: str, topic: str) -> None:
    # A plain function's handler runs as messages arrive; one that returns something to await
    # hands over to the subscription's task, and the rest of the batch waits its turn.
    got: list[Any] = []
    done = asyncio.Event()

    async def slow(i: int) -> None:
        await asyncio.sleep(0.05)
        got.append(f"{i} done")

    def handler(msg: Message) -> Any:
        got.append(msg.data)
        if msg.data == 9 and got.count(9) == 2:
            done.set()
        return slow(msg.data) if msg.data in (3, 6) else None

    async with herald.AsyncClient(url) as hub, hub.subscribe(topic, handler=handler) as sub:
        for _ in range(2):  # the second burst arrives while the first is still being handled
            for i in range(10):
                await hub.publish(topic, i)
            await asyncio.sleep(0.01)
        async with asyncio.timeout(2):
            await done.wait()
        await asyncio.sleep(0.05)  # nothing else arrives
        one = [0, 1, 2, 3, "3 done", 4, 5, 6, "6 done", 7, 8, 9]
        assert got == one + one
        assert sub.stats.delivered == 20
        assert sub.stats.handler_errors == 0


# -- volume and order ------------------------------------------------------------------------


async def test_a_lone_publish_is_written_at_once_and_a_burst_still_batched(
    own_server: EmbeddedServer, topic: str
) -> None:
    # Nothing in flight: the first publish goes out at once rather than at the end of the
    # event-loop iteration; the nine published right after it, while it is in flight, share
    # one batch frame. Without yielding in between, so this is exact.
    async with herald.AsyncClient(own_server.url) as hub, hub.subscribe(topic) as sub:
        calls = await publish_calls(hub)
        for i in range(10):
            await hub.publish(topic, i)
        await hub.flush()
        assert await publish_calls(hub) - calls == 2
        assert [(await sub.next(timeout=2)).data for _ in range(10)] == list(range(10))


N = 10_000


@pytest.mark.parametrize("batch", [True, False])
async def test_order_of_many_messages(own_server: EmbeddedServer, topic: str, batch: bool) -> None:
    async with (
        herald.AsyncClient(own_server.url, batch=batch) as pub,
        herald.AsyncClient(own_server.url) as hub,
        hub.subscribe(topic, max_pending=N) as sub,
    ):
        calls = await publish_calls(pub)
        for i in range(N):
            await pub.publish(topic, i)
        await pub.flush()
        calls = await publish_calls(pub) - calls
        got = [(await sub.next(timeout=5)).data for _ in range(N)]
        assert got == list(range(N))
        assert sub.stats.dropped == 0
        assert pub.stats.published == N
        assert pub.stats.publish_errors == 0
        if batch:
            assert 1 <= calls < N // 10, calls  # batch frames kicked in
        else:
            assert calls == N
        with pytest.raises(herald.Timeout):
            await sub.next(timeout=0.05)


async def test_order_across_topics_and_confirmed_publishes(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(f"{topic}.*") as sub:
        expected = []
        for i in range(3000):
            name = f"{topic}.{(i // 7) % 3}"  # runs of 7 per topic, so batches break often
            if i % 500 == 499:
                assert (await hub.publish(name, i, confirm=True)).receivers == 1
            else:
                await hub.publish(name, i)
            expected.append((name, i))
        await hub.flush()
        got = [await sub.next(timeout=5) for _ in range(len(expected))]
        assert [(m.topic, m.data) for m in got] == expected
        assert sub.pending == 0


async def test_batched_messages_keep_their_headers_and_ids(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        for i in range(200):
            await hub.publish(topic, {"i": i}, headers={"i": str(i)})
        await hub.flush()
        got = [await sub.next(timeout=2) for _ in range(200)]
    assert [m.data for m in got] == [{"i": i} for i in range(200)]
    assert [m.headers for m in got] == [{"i": str(i)} for i in range(200)]
    assert len({m.id for m in got}) == 200


# -- refused publishes -----------------------------------------------------------------------


async def test_message_too_large(url: str, topic: str) -> None:
    async with herald.AsyncClient(url, max_message_size=100) as hub, hub.subscribe(topic) as sub:
        with pytest.raises(MessageTooLarge) as info:
            await hub.publish(topic, b"x" * 100)
        assert info.value.size == HEAD_SIZE + 100
        assert info.value.limit == 100
        assert isinstance(info.value, ValueError)
        with pytest.raises(MessageTooLarge):
            await hub.publish(topic, b"x" * 100, confirm=True)
        assert (await hub.publish(topic, b"y" * (100 - HEAD_SIZE), confirm=True)).receivers == 1
        msg = await sub.next(timeout=2)
        assert msg.data == b"y" * (100 - HEAD_SIZE)  # nothing of the refused ones was sent
        assert hub.stats.published == 1


async def test_unencodable_payload_is_a_type_error(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        with pytest.raises(TypeError, match="cannot encode payload of type object"):
            await hub.publish(topic, object())
        with pytest.raises(TypeError):
            await hub.publish(topic, {"when": object()}, confirm=True)
        await hub.publish(topic, "fine", confirm=True)
        assert (await sub.next(timeout=2)).data == "fine"
        assert sub.pending == 0


# -- bare topics -----------------------------------------------------------------------------


async def test_declare_bare_sends_bare_payloads(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        await hub.publish(topic, b"framed", confirm=True)
        policy = await hub.declare(topic, bare=True)
        assert policy == herald.TopicPolicy(bare=True)
        assert (await hub.topics())[topic] == policy
        await hub.publish(topic, b"bare", confirm=True)
        await hub.publish(topic, {"a": 1}, confirm=True)
        await hub.publish(topic, "text", headers={"dropped": "yes"}, confirm=True)
        framed, raw, js, text = [await sub.next(timeout=2) for _ in range(4)]
        assert (framed.data, framed.foreign) == (b"framed", False)
        for msg, data in ((raw, b"bare"), (js, b'{"a":1}'), (text, b"text")):
            assert msg.data == data
            assert msg.foreign
            assert msg.id is None
            assert msg.headers == {}
        # Another client learns the policy from Redis when it connects.
        async with herald.AsyncClient(url) as other:
            await other.publish(topic, "from other", confirm=True)
            msg = await sub.next(timeout=2)
            assert (msg.data, msg.foreign) == (b"from other", True)
        # Declaring it live again restores the envelope.
        await hub.declare(topic, bare=False, update=True)
        await hub.publish(topic, "framed again", confirm=True)
        msg = await sub.next(timeout=2)
        assert (msg.data, msg.foreign) == ("framed again", False)


async def test_bare_policy_reaches_a_running_client(url: str, topic: str) -> None:
    async with (
        herald.AsyncClient(url, policy_refresh=0.02) as other,
        herald.AsyncClient(url) as hub,
        hub.subscribe(topic) as sub,
    ):
        await other.publish(topic, "before", confirm=True)
        assert (await sub.next(timeout=2)).foreign is False
        await hub.declare(topic, bare=True)
        # The running client polls the policy version; wait for its effect, bounded.
        deadline = time.monotonic() + 2
        while True:
            await other.publish(topic, "after", confirm=True)
            msg = await sub.next(timeout=2)
            if msg.foreign or time.monotonic() > deadline:
                break
        assert (msg.data, msg.foreign) == (b"after", True)


async def test_publish_many_keeps_order_across_batches_and_topics(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(f"{topic}.*") as sub:
        await hub.publish_many(f"{topic}.a", range(2500))
        await hub.publish(f"{topic}.b", "between")
        await hub.publish_many(f"{topic}.a", [{"n": i} for i in range(3)], headers={"h": "1"})
        got = [await sub.next(timeout=5) for _ in range(2504)]
        assert [m.data for m in got[:2500]] == list(range(2500))
        assert got[2500].data == "between"
        assert [m.data for m in got[2501:]] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert got[-1].headers == {"h": "1"}
        with pytest.raises(herald.MessageTooLarge):
            await hub.publish_many(f"{topic}.a", ["ok", "x" * 2_000_000])
        assert hub.stats.published == 2504


def test_publish_many_sync(url: str, topic: str) -> None:
    with herald.Client(url) as hub, hub.subscribe(topic) as sub:
        hub.publish_many(topic, (f"m{i}" for i in range(1500)))
        assert [sub.next(timeout=5).data for _ in range(1500)] == [f"m{i}" for i in range(1500)]


def test_runs_on_uvloop(url: str, topic: str) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[object]:
        async with herald.AsyncClient(url) as hub, hub.subscribe(f"{topic}.*") as sub:
            await hub.publish(f"{topic}.a", 1)
            await hub.publish_many(f"{topic}.b", [2, 3])
            return [(await sub.next(2)).data for _ in range(3)]

    assert uvloop.run(main()) == [1, 2, 3]
