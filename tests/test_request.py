"""Request/reply on live topics: inbox, replies, scatter/gather, failures, asyncio and threads."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

import herald
from herald import EmbeddedServer, Message
from herald._core.wire import Encoder

REPLY_TO = "herald-reply-to"
REQUEST_ID = "herald-request-id"


def double(msg: Message) -> Any:
    return msg.data * 2


def pending(hub: herald.AsyncClient) -> int:
    requests = hub._requests
    return requests.pending if requests is not None else 0


async def late_replies(hub: herald.AsyncClient, expected: int, timeout: float = 5.0) -> int:
    """``hub.stats.late_replies`` once it reaches ``expected`` (or at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        late = hub.stats.late_replies
        if late >= expected or time.monotonic() > deadline:
            return late
        await asyncio.sleep(0.01)


# -- round trips -------------------------------------------------------------------------------


async def test_round_trip_with_a_handler_return_value(url: str, topic: str) -> None:
    seen: list[Message] = []

    def answer(msg: Message) -> Any:
        seen.append(msg)
        return {"echo": msg.data}

    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:
        await responder.subscribe(topic, handler=answer)
        reply = await caller.request(topic, {"ip": "1.2.3.4"}, headers={"trace": "t1"})
        assert reply.data == {"echo": {"ip": "1.2.3.4"}}
        request = seen[0]
        inbox = request.headers[REPLY_TO]
        assert inbox == caller._request_table().inbox
        assert inbox.startswith("_herald.inbox.")
        assert request.headers["trace"] == "t1"  # the caller's headers travel with the request
        assert reply.topic == inbox
        assert reply.headers == {REQUEST_ID: request.headers[REQUEST_ID]}
        assert reply.id is not None
        assert reply.id.startswith(responder._encoder.publisher_id.hex())
        assert pending(caller) == 0
        assert caller.stats.late_replies == 0


async def test_a_plain_responder_answers_without_waking_its_task(
    url: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Replied as the request arrives; with room in the send buffer there is nothing for the
    # subscription's task to await, so it is not woken (one task switch less per request).
    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:
        sub = await responder.subscribe(topic, handler=lambda msg: msg.data * 2)
        await asyncio.sleep(0.05)  # the task is waiting
        wakes = 0
        wake = sub._wake

        def counted() -> None:
            nonlocal wakes
            wakes += 1
            wake()

        monkeypatch.setattr(sub, "_wake", counted)
        for i in range(20):
            assert (await caller.request(topic, i)).data == 2 * i
        assert wakes == 0
        assert sub.stats.delivered == 20


async def test_coroutine_handler_and_self_request(url: str, topic: str) -> None:
    async def answer(msg: Message) -> Any:
        await asyncio.sleep(0)
        return f"hello {msg.data}"

    # One client can be its own responder: the request and the reply use its two connections.
    async with herald.AsyncClient(url) as hub:
        await hub.subscribe(topic, handler=answer)
        assert (await hub.request(topic, "me")).data == "hello me"
        assert (await hub.request(topic, "again")).data == "hello again"


async def test_msg_reply_from_an_iterator(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:
        sub = await responder.subscribe(topic)

        async def serve() -> None:
            async for msg in sub:
                await msg.reply(sum(msg.data), headers={"served-by": "iterator"})

        task = asyncio.create_task(serve())
        try:
            reply = await caller.request(topic, [1, 2, 3])
            assert reply.data == 6
            assert reply.headers["served-by"] == "iterator"
            assert REQUEST_ID in reply.headers
        finally:
            task.cancel()


async def test_any_client_can_reply_by_publishing_to_the_inbox(url: str, topic: str) -> None:
    # The protocol is ordinary messages: publish to herald-reply-to with herald-request-id. A
    # Herald client's publish() refuses both (they are Herald's), so this is what a program in
    # another language does: PUBLISH an envelope of its own.
    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as other:
        sub = await other.subscribe(topic)

        async def serve() -> None:
            msg = await sub.next(5)
            frame = Encoder().envelope("by hand", {REQUEST_ID: msg.headers[REQUEST_ID]})
            await other.execute("PUBLISH", msg.headers[REPLY_TO], frame)

        task = asyncio.create_task(serve())
        assert (await caller.request(topic, None)).data == "by hand"
        await task


async def test_a_handler_returning_none_does_not_answer(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:
        await responder.subscribe(topic, handler=lambda msg: None)
        with pytest.raises(herald.Timeout):
            await caller.request(topic, 1, timeout=0.2)


async def test_reply_to_a_message_that_is_not_a_request(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        # A handler's return value for an ordinary message is ignored.
        await hub.subscribe(topic, handler=lambda msg: "ignored")
        await hub.publish(topic, "plain", confirm=True)
        msg = await sub.next(5)
        with pytest.raises(herald.HeraldError, match="not a request"):
            msg.reply("x")
        assert hub.stats.published == 1


# -- scatter/gather ----------------------------------------------------------------------------


async def test_request_many_gathers_every_responder(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as caller:
        responders = [herald.AsyncClient(url) for _ in range(3)]
        try:
            for i, r in enumerate(responders):

                def answer(msg: Message, i: int = i) -> Any:
                    return {"responder": i, "q": msg.data}

                await r.subscribe(topic, handler=answer)
            start = time.perf_counter()
            replies = await caller.request_many(topic, "size?", timeout=2.0)
            elapsed = time.perf_counter() - start
            assert sorted(r.data["responder"] for r in replies) == [0, 1, 2]
            assert all(r.data["q"] == "size?" for r in replies)
            # Three receivers, three answers: no wait for the timeout.
            assert elapsed < 1.0

            assert len(await caller.request_many(topic, "one", max_replies=1, timeout=2.0)) == 1
            two = await caller.request_many(topic, "two", max_replies=2, timeout=2.0)
            assert len(two) == 2
            assert pending(caller) == 0
        finally:
            for r in responders:
                await r.close()


async def test_request_many_returns_what_arrived_at_the_timeout(url: str, topic: str) -> None:
    async with (
        herald.AsyncClient(url) as caller,
        herald.AsyncClient(url) as responder,
        herald.AsyncClient(url) as other,
    ):
        await responder.subscribe(topic, handler=double)
        silent = await other.subscribe(topic)  # receives, never answers
        start = time.perf_counter()
        replies = await caller.request_many(topic, 21, timeout=0.3)
        assert 0.29 <= time.perf_counter() - start < 1.0
        assert [r.data for r in replies] == [42]
        assert silent.pending == 1
        with pytest.raises(herald.NoResponders):
            await caller.request_many(f"{topic}.nobody", 1)


# -- failures ----------------------------------------------------------------------------------


async def test_no_responders_at_once(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as caller:
        start = time.perf_counter()  # includes subscribing the inbox on first use
        with pytest.raises(herald.NoResponders) as info:
            await caller.request(topic, 1, timeout=5.0)
        assert time.perf_counter() - start < 0.05
        assert info.value.topic == topic
        start = time.perf_counter()
        with pytest.raises(herald.NoResponders):
            await caller.request(topic, 1, timeout=5.0)
        assert time.perf_counter() - start < 0.05
        assert pending(caller) == 0


async def test_timeout_when_the_responder_never_answers(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:
        await responder.subscribe(topic)  # an iterator nobody reads: it never replies
        start = time.perf_counter()
        with pytest.raises(herald.Timeout) as info:
            await caller.request(topic, 1, timeout=0.2)
        assert 0.19 <= time.perf_counter() - start < 0.6
        assert info.value.timeout == 0.2
        assert isinstance(info.value, TimeoutError)
        assert pending(caller) == 0


async def test_cancelled_request_leaves_nothing_and_its_late_reply_is_dropped(
    url: str, topic: str
) -> None:
    release = asyncio.Event()

    async def answer(msg: Message) -> Any:
        if msg.data == "slow":
            await release.wait()
        return f"answer to {msg.data}"

    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:
        # Two subscriptions: the slow answer does not hold up the fast one.
        await responder.subscribe(topic, handler=answer)
        fast = f"{topic}.fast"
        await responder.subscribe(fast, handler=answer)
        task = asyncio.create_task(caller.request(topic, "slow", timeout=5.0))
        await asyncio.sleep(0.1)
        assert pending(caller) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pending(caller) == 0

        release.set()  # the cancelled request's answer is now on its way ...
        reply = await caller.request(fast, "next", timeout=5.0)
        assert reply.data == "answer to next"  # ... and never taken for the next one's
        assert await late_replies(caller, 1) == 1
        assert pending(caller) == 0


async def test_a_second_reply_to_one_request_is_dropped_and_counted(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:
        await responder.subscribe(topic, handler=double)
        await responder.subscribe(topic, handler=double)
        assert (await caller.request(topic, 2)).data == 4
        assert await late_replies(caller, 1) == 1


async def test_200_concurrent_requests_each_get_their_own_answer(url: str, topic: str) -> None:
    async def answer(msg: Message) -> Any:
        await asyncio.sleep(0.001 * (msg.data % 7))  # answers come back out of order
        return {"n": msg.data, "square": msg.data**2}

    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:
        await responder.subscribe(topic, handler=answer)
        await responder.subscribe(topic, handler=lambda msg: None)  # a second receiver
        replies = await asyncio.gather(*(caller.request(topic, n, timeout=10) for n in range(200)))
        assert [r.data for r in replies] == [{"n": n, "square": n * n} for n in range(200)]
        assert len({r.headers[REQUEST_ID] for r in replies}) == 200
        assert pending(caller) == 0
        assert caller.stats.late_replies == 0


async def test_a_responder_that_raises_sends_an_error_reply(
    url: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(msg: Message) -> Any:
        if msg.data == "bad":
            raise ValueError("no such thing")
        if msg.data == "unencodable":
            return object()
        return "ok"

    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:
        sub = await responder.subscribe(topic, handler=answer, error_text=True)
        start = time.perf_counter()
        with pytest.raises(herald.ResponderFailed) as info:
            await caller.request(topic, "bad", timeout=5.0)
        assert time.perf_counter() - start < 1.0  # at once, not after the timeout
        assert info.value.topic == topic
        assert info.value.error == "ValueError: no such thing"
        assert info.value.reply.headers["herald-error"] == info.value.error
        with pytest.raises(herald.ResponderFailed, match="TypeError: cannot encode"):
            await caller.request(topic, "unencodable", timeout=5.0)
        assert (await caller.request(topic, "fine")).data == "ok"  # the responder lives on
        assert sub.stats.handler_errors == 2
        assert "no such thing" in caplog.text  # and its own log has the traceback

        # request_many returns error replies among the others, without raising.
        [failed] = await caller.request_many(topic, "bad", timeout=5.0)
        assert failed.headers["herald-error"] == "ValueError: no such thing"


async def test_bad_arguments(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(herald.ConfigurationError, match="reserved"):
            await hub.request(topic, 1, headers={"herald-reply-to": "elsewhere"})
        with pytest.raises(herald.ConfigurationError, match="timeout"):
            await hub.request(topic, 1, timeout=0)
        with pytest.raises(herald.ConfigurationError, match="max_replies"):
            await hub.request_many(topic, 1, max_replies=0)
        with pytest.raises(herald.InvalidTopic):
            await hub.request("news.*", 1)
        await hub.declare(topic, bare=True)
        with pytest.raises(herald.ConfigurationError, match="bare"):
            await hub.request(topic, 1)
        assert pending(hub) == 0


async def test_close_fails_pending_requests_at_once(url: str, topic: str) -> None:
    caller = herald.AsyncClient(url)
    async with herald.AsyncClient(url) as responder:
        await responder.subscribe(topic)  # never answers
        task = asyncio.create_task(caller.request(topic, 1, timeout=10.0))
        await asyncio.sleep(0.1)
        start = time.perf_counter()
        await caller.close()
        with pytest.raises(herald.ClientClosed):
            await task
        assert time.perf_counter() - start < 1.0
        with pytest.raises(herald.ClientClosed):
            await caller.request(topic, 1)


async def test_acl_refusals_reach_the_caller(own_server: EmbeddedServer) -> None:
    async with herald.AsyncClient(own_server.url) as admin:
        # no_inbox may use channels allowed.* only; caller may also use its inbox.
        for user, channels in (
            ("no_inbox", ["&allowed.*"]),
            ("caller", ["&allowed.*", "&_herald.inbox.*"]),
        ):
            await admin.execute("ACL", "SETUSER", user, "on", ">pw", "~*", *channels, "+@all")
        await admin.subscribe("allowed.x", handler=double)
        url = f"redis://{{}}:pw@127.0.0.1:{own_server.port}"
        async with herald.AsyncClient(url.format("no_inbox")) as hub:
            for _ in range(2):  # refused each time, never stuck
                with pytest.raises(herald.PermissionDenied):
                    await hub.request("allowed.x", 1)
            assert pending(hub) == 0
        async with herald.AsyncClient(url.format("caller")) as hub:
            assert (await hub.request("allowed.x", 1)).data == 2
            with pytest.raises(herald.PermissionDenied):  # the request's own PUBLISH
                await hub.request("forbidden.x", 1)
            with pytest.raises(herald.PermissionDenied):
                await hub.request_many("forbidden.x", 1)
            assert pending(hub) == 0


# -- the inbox across reconnects ----------------------------------------------------------------


async def test_a_reply_sent_while_the_inbox_is_down_is_lost_then_requests_work_again(
    own_server: EmbeddedServer, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    got_request = asyncio.Event()
    release = asyncio.Event()
    gaps: list[herald.Gap] = []

    async def answer(msg: Message) -> Any:
        if msg.data == "first":
            got_request.set()
            await release.wait()
        return f"answer to {msg.data}"

    async with (
        herald.AsyncClient(own_server.url) as caller,
        herald.AsyncClient(own_server.url) as responder,
    ):
        user_sub = await caller.subscribe(f"{topic}.user", on_gap=gaps.append)
        await responder.subscribe(topic, handler=answer)
        task = asyncio.create_task(caller.request(topic, "first", timeout=1.0))
        await got_request.wait()
        # Every Pub/Sub connection dies (the responder has the request in hand already): the
        # reply is published before the caller's inbox is back (its reconnect backs off first).
        await responder.execute("CLIENT", "KILL", "TYPE", "pubsub")
        release.set()
        with pytest.raises(herald.Timeout):
            await task
        assert caller.stats.late_replies == 0  # lost on the server (0 receivers), not misrouted

        # After the reconnect the same inbox is subscribed again and routes correctly.
        assert (await caller.request(topic, "second", timeout=5.0)).data == "answer to second"
        assert pending(caller) == 0
        # The inbox is not a user subscription: only the user's subscription saw the gap.
        assert len(gaps) == 1
        assert user_sub.stats.gaps == 1
        assert "_herald.inbox" not in caplog.text
        assert caller._requests is not None
        numsub = await caller.execute("PUBSUB", "NUMSUB", caller._requests.inbox)
        assert numsub[1] == 1


# -- threads (herald.Client) -------------------------------------------------------------------


def test_sync_round_trip_with_a_handler_thread(url: str, topic: str) -> None:
    threads: list[str] = []

    def answer(msg: Message) -> Any:
        threads.append(threading.current_thread().name)
        if msg.data == "bad":
            raise RuntimeError("handler thread failed")
        return msg.data * 2

    with herald.Client(url) as caller, herald.Client(url) as responder:
        responder.subscribe(topic, handler=answer, error_text=True)
        assert caller.request(topic, 21).data == 42
        assert caller.request(topic, "ab", timeout=2.0).data == "abab"
        assert threads[0].startswith("herald-handler")
        with pytest.raises(herald.ResponderFailed, match="RuntimeError: handler thread failed"):
            caller.request(topic, "bad")
        assert [r.data for r in caller.request_many(topic, 1, timeout=2.0)] == [2]
        with pytest.raises(herald.NoResponders):
            caller.request(f"{topic}.nobody", 1)
        responder.subscribe(f"{topic}.silent")  # receives, never answers
        with pytest.raises(herald.Timeout):
            caller.request(f"{topic}.silent", 1, timeout=0.1)


def test_sync_msg_reply_from_a_user_thread(url: str, topic: str) -> None:
    with herald.Client(url) as caller, herald.Client(url) as responder:
        sub = responder.subscribe(topic)

        def serve() -> None:
            for msg in sub:
                result = msg.reply({"got": msg.data})  # sent at once from this thread
                assert result is not None

        server = threading.Thread(target=serve)
        server.start()
        try:
            assert caller.request(topic, "hi").data == {"got": "hi"}
        finally:
            sub.close()
            server.join(5)


async def test_async_caller_and_sync_responder(url: str, topic: str) -> None:
    with herald.Client(url) as responder:
        responder.subscribe(topic, handler=double)
        async with herald.AsyncClient(url) as caller:
            assert (await caller.request(topic, 5)).data == 10


async def test_no_warning_for_an_unawaited_reply(url: str, topic: str) -> None:
    # msg.reply() queues at once; awaiting it only waits for room in the send buffer, so an
    # asyncio user who forgets the await still answers (and filterwarnings=error sees nothing).
    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:
        sub = await responder.subscribe(topic)

        async def serve() -> None:
            msg = await sub.next(5)
            msg.reply("unawaited")

        task = asyncio.create_task(serve())
        assert (await caller.request(topic, 1)).data == "unawaited"
        await task


def test_request_from_a_handler_thread_is_allowed(url: str, topic: str) -> None:
    results: list[Any] = []
    done = threading.Event()
    with herald.Client(url) as hub:
        hub.subscribe(f"{topic}.inner", handler=double)

        def outer(msg: Message) -> None:
            results.append(hub.request(f"{topic}.inner", msg.data).data)
            done.set()

        hub.subscribe(topic, handler=outer)
        hub.publish(topic, 4)
        assert done.wait(5)
        assert results == [8]


def test_logging_is_quiet_on_the_happy_path(
    url: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="herald")
    with herald.Client(url) as caller, herald.Client(url) as responder:
        responder.subscribe(topic, handler=double)
        for i in range(10):
            assert caller.request(topic, i).data == 2 * i
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
