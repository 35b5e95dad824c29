"""Herald's reserved names, in the library: ``herald-`` headers, the reply inbox namespace, and
dead-letter topics belong to Herald; a request cannot steer a responder's reply elsewhere; a
responder's exception text stays with the responder unless it opts in.

Each test drives a real server (no mocks) and sends what a hostile publisher would send.
"""

from __future__ import annotations

import asyncio
import re

import pytest

import herald
from herald._core.wire import Encoder

REPLY_TO = "herald-reply-to"
REQUEST_ID = "herald-request-id"


async def _collect(hub: herald.AsyncClient, name: str) -> tuple[herald.Subscription, list[str]]:
    seen: list[str] = []
    sub = await hub.subscribe(name, handler=lambda m: seen.append(m.topic))
    return sub, seen


async def test_publish_refuses_reserved_headers(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        for name in (REPLY_TO, REQUEST_ID, "herald-error", "herald-reason", "herald-anything"):
            with pytest.raises(herald.ReservedName) as info:
                await hub.publish(topic, 1, headers={name: "x"})
            assert info.value.name == name
            with pytest.raises(herald.ReservedName):
                await hub.publish(topic, 1, headers={name: "x"}, confirm=True)
            with pytest.raises(herald.ReservedName):
                await hub.publish_many(topic, [1, 2], headers={name: "x"})
        # A topic known to the hot path (published before) refuses them too.
        await hub.publish(topic, 0)
        with pytest.raises(herald.ReservedName):
            await hub.publish(topic, 1, headers={REPLY_TO: "x"})
        # ReservedName is a ConfigurationError: code that caught that keeps working.
        with pytest.raises(herald.ConfigurationError):
            await hub.request(topic, 1, headers={REPLY_TO: "elsewhere"})
        await hub.publish(topic, 1, headers={"trace": "ok", "Herald": "not reserved"})


def test_sync_publish_refuses_reserved_headers(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        with pytest.raises(herald.ReservedName):
            hub.publish(topic, 1, headers={REPLY_TO: "x"})
        with pytest.raises(herald.ReservedName):
            hub.publish_many(topic, [1], headers={REQUEST_ID: "1"})


async def test_the_inbox_namespace_is_refused_to_users(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        inbox = hub._request_table().inbox
        for name in (inbox, "_herald.inbox.0123456789abcdef", "_herald.inbox.x"):
            with pytest.raises(herald.ReservedName):
                await hub.publish(name, "forged reply")
            with pytest.raises(herald.ReservedName):
                await hub.publish(name, "forged reply", confirm=True)
            with pytest.raises(herald.ReservedName):
                await hub.subscribe(name)
        with pytest.raises(herald.ReservedName):
            await hub.subscribe("_herald.inbox.*")
        with pytest.raises(herald.ReservedName):
            await hub.subscribe("_herald.inbox*")
        with pytest.raises(herald.ReservedName):
            await hub.declare(inbox, bare=True)  # replies to it would lose their headers


async def test_inbox_and_request_ids_are_not_derivable(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:
        seen: list[herald.Message] = []

        def answer(msg: herald.Message) -> str:
            seen.append(msg)
            return "ok"

        await responder.subscribe(topic, handler=answer)
        for _ in range(3):
            await caller.request(topic, None, timeout=5)
        inbox = seen[0].headers[REPLY_TO]
        pid = caller._encoder.publisher_id.hex()
        assert inbox.startswith("_herald.inbox.")
        assert pid not in inbox  # not derivable from the caller's message ids
        assert re.fullmatch(r"_herald\.inbox\.[0-9a-f]{32}", inbox)
        ids = [m.headers[REQUEST_ID] for m in seen]
        assert len(set(ids)) == 3
        assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in ids), ids  # no counter


async def test_a_forged_reply_to_does_not_make_a_responder_publish_elsewhere(
    url: str, topic: str
) -> None:
    """A request whose reply address is not an inbox (sent by a raw client that can build an
    envelope) is handled, but its answer, or its error, goes nowhere."""
    target = f"{topic}.admin.commands"
    async with herald.AsyncClient(url) as hub, herald.AsyncClient(url) as watcher:
        _, landed = await _collect(watcher, target)
        handled: list[object] = []

        def echo(msg: herald.Message) -> object:
            handled.append(msg.data)
            if msg.data == "boom":
                raise RuntimeError("postgres://app:s3cret@db/prod")
            return {"echo": msg.data}

        await hub.subscribe(topic, handler=echo)
        enc = Encoder()
        for data in ({"cmd": "drop-db"}, "boom"):
            frame = enc.envelope(data, {REPLY_TO: target, REQUEST_ID: "1"})
            assert await hub.execute("PUBLISH", topic, frame) == 1
        async with asyncio.timeout(5):
            while len(handled) < 2:  # noqa: ASYNC110 - polls counters or the server
                await asyncio.sleep(0.01)
        await hub.flush()
        await asyncio.sleep(0.2)
        assert landed == []


async def test_error_text_stays_with_the_responder_by_default(
    url: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:

        def fail(msg: herald.Message) -> None:
            raise RuntimeError("postgres://app:s3cret@db/prod")

        await responder.subscribe(topic, handler=fail)
        with pytest.raises(herald.ResponderFailed) as info:
            await caller.request(topic, None, timeout=5)
        assert "s3cret" not in info.value.error
        assert "s3cret" not in repr(info.value.reply.headers)
        assert info.value.error == "RuntimeError"
        ref = info.value.reply.headers["herald-error-id"]
        assert re.fullmatch(r"[0-9a-f]{16}", ref)
        # The responder's log has the whole exception under the same id.
        assert ref in caplog.text
        assert "s3cret" in caplog.text


async def test_a_responder_may_opt_in_to_send_error_text(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:

        def fail(msg: herald.Message) -> None:
            raise ValueError("no such thing")

        await responder.subscribe(topic, handler=fail, error_text=True)
        with pytest.raises(herald.ResponderFailed) as info:
            await caller.request(topic, None, timeout=5)
        assert info.value.error == "ValueError: no such thing"
        assert "herald-error-id" in info.value.reply.headers


def test_sync_responder_error_text_opt_in(url: str, topic: str) -> None:
    with herald.Client(url) as caller, herald.Client(url) as responder:

        def fail(msg: herald.Message) -> None:
            raise ValueError("secret detail")

        sub = responder.subscribe(topic, handler=fail)
        with pytest.raises(herald.ResponderFailed) as info:
            caller.request(topic, None, timeout=5)
        assert info.value.error == "ValueError"
        sub.close()
        responder.subscribe(topic, handler=fail, error_text=True)
        with pytest.raises(herald.ResponderFailed) as info:
            caller.request(topic, None, timeout=5)
        assert info.value.error == "ValueError: secret detail"


async def test_pattern_subscriptions_do_not_see_replies(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as caller, herald.AsyncClient(url) as responder:
        await responder.subscribe(topic, handler=lambda m: "answer")
        watcher, seen = await _collect(responder, "*")
        await caller.request(topic, None, timeout=5)
        await asyncio.sleep(0.2)
        assert topic in seen  # the request, on its topic
        assert not [t for t in seen if t.startswith("_herald.inbox.")]
        await watcher.close()


async def test_dead_letter_topics_are_written_by_herald_only(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        dead = f"{topic}.dead"
        for confirm in (True, False, None):
            with pytest.raises(herald.ReservedName):
                await hub.publish(dead, {"forged": 1}, confirm=confirm)
        with pytest.raises(herald.ReservedName):
            await hub.publish_many(dead, [1])
        assert await hub.dead_letters(topic) == []
        # A topic merely named like a dead-letter topic, but not one, is free.
        await hub.publish(f"{topic}x.dead", "live")
        # Herald itself still dead-letters, and replays.
        async with hub.consume(topic, "g", start="all") as c:
            await hub.publish(topic, "bad")
            msg = await c.next(5)
            await msg.term("broken")
        async with asyncio.timeout(5):
            while not await hub.dead_letters(topic):  # noqa: ASYNC110 - polls counters or the server
                await asyncio.sleep(0.02)
        (letter,) = await hub.dead_letters(topic)
        assert letter.reason == "broken"
        assert await hub.replay_dead(topic)


def test_sync_publish_refuses_dead_letter_topics(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        with pytest.raises(herald.ReservedName):
            hub.publish(f"{topic}.dead", 1)
