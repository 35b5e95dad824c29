"""The fast paths of durable topics: publishing without Lua, publish_many in one burst, the
one-step message construction, the read path for new entries (``read_messages``: the same
messages as the general path, in stream order, entries still held skipped), batched acks and
their grouped XACK ids, and the consumer's read size.

The behaviour they must keep (at least once, redelivery, dead letters) is tested in
``test_durable.py`` and ``test_consumer_faults.py``; these tests pin what the fast paths do
differently, and check them against the general paths.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import hiredis
import pytest

import herald
from herald import DurableMessage, EmbeddedServer, ServerError
from herald._core.durable_message import durable_message
from herald._core.message import Message
from herald._core.resp import command, head, prefix
from herald._core.streams import (
    DurableTopic,
    decode_entry,
    fast_entry,
    parse_read,
    read_messages,
    stream_key,
)
from herald._core.wire import Encoder, batch
from herald._durable.group import bulk_strings


async def wait_until(cond: Any, timeout: float, what: str) -> None:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)


async def command_calls(hub: herald.AsyncClient, *names: str) -> dict[str, int]:
    """How many times the server ran each command so far (INFO commandstats)."""
    info = bytes(await hub.execute("INFO", "commandstats")).decode()
    calls = dict.fromkeys(names, 0)
    for line in info.splitlines():
        name, _, rest = line.partition(":")
        cmd = name.removeprefix("cmdstat_")
        if cmd in calls:
            calls[cmd] = int(rest.split(",")[0].split("=")[1])
    return calls


def _spec(topic: str = "orders") -> DurableTopic:
    return DurableTopic(
        topic,
        max_len=None,
        max_age=None,
        dedup_window=120,
        trim_unacked=False,
        policy_json=b"",
        dead_json=b"",
    )


# -- sans-I/O --------------------------------------------------------------------------------


def test_append_command_is_xadd_then_publish() -> None:
    spec = _spec("orders.eu")
    frame = Encoder("json").envelope({"id": 7}, None)
    assert spec.append_command(frame) == command(
        "XADD", stream_key("orders.eu"), "*", "m", frame
    ) + command("PUBLISH", "orders.eu", frame)
    assert head("PUBLISH", "news") == prefix(b"PUBLISH", b"news")


class _Settler:
    def _ack(self, msg: DurableMessage, confirm: bool) -> Any: ...
    def _nak(self, msg: DurableMessage, delay: float | None) -> Any: ...
    def _term(self, msg: DurableMessage, reason: str) -> Any: ...
    def _in_progress(self, msg: DurableMessage) -> Any: ...


def _slots(cls: type) -> list[str]:
    return [s for k in cls.__mro__ for s in getattr(k, "__slots__", ()) if s != "__weakref__"]


# Compared through what reads them: the ids may be left in the frame (Message._ids), the
# headers dict made on first use (Message.headers).
LAZY = ("_pid", "_seq", "_ts", "_headers")


def assert_same_message(fast: DurableMessage, slow: DurableMessage) -> None:
    """Every slot set, and equal to the general path's; the ids as read from the frame."""
    for name in _slots(DurableMessage):
        if name == "_replier":
            continue  # set on requests only, never by a constructor
        assert hasattr(fast, name), f"not set: {name}"
        if name not in LAZY:
            assert getattr(fast, name) == getattr(slow, name), name
    assert fast._ids() == slow._ids()
    assert fast.headers == slow.headers
    assert (fast.id, fast.timestamp, fast.foreign) == (slow.id, slow.timestamp, slow.foreign)
    assert fast.id is not None
    assert fast.headers is not slow.headers


def test_durable_message_sets_every_slot_as_the_constructor_does() -> None:
    # Guards the one-step constructor against slots added to Message or DurableMessage later.
    settler = _Settler()
    pid, seq, ts = b"p" * 8, 3, 1_700_000_000_000_000
    frame = Encoder("json", publisher_id=pid, first_seq=seq, clock=lambda: ts * 1000).envelope(
        {"a": 1}, None
    )
    fast = durable_message("t", {"a": 1}, frame, 1, b"1-1", 2, settler)
    slow = DurableMessage(Message("t", {"a": 1}, frame, 1, pid, seq, ts, {}), "1-1", 2, settler)
    assert_same_message(fast, slow)
    assert fast.id == f"{pid.hex()}-{seq}"
    assert fast.timestamp == ts / 1e6


def test_fast_entry_matches_the_general_path() -> None:
    settler = _Settler()
    enc = Encoder("json")
    frame = enc.envelope({"id": 7, "items": [1, 2]}, None)
    msg = fast_entry("t", b"5-0", [b"m", frame], 3, settler)
    assert msg is not None
    ref = DurableMessage(decode_entry("t", [b"m", frame]), "5-0", 3, settler)
    assert_same_message(msg, ref)
    # Everything else takes the general path (which reports errors, headers, keys, foreign).
    others = [
        [b"m", enc.envelope({"id": 7}, {"trace": "x"})],  # headers
        [b"m", Encoder("msgpack").envelope({"id": 7}, None)],  # another codec
        [b"m", enc.envelope({"id": 7}, None)[:-1]],  # broken JSON
        [b"m", b"plain text"],  # foreign payload
        [b"m", batch([frame, frame])],  # a batch frame
        [b"m", frame, b"k", b"key-1"],  # an ordering key
        [b"m", frame, b"herald-reason", b"why"],  # a dead letter
        [b"x", b"y"],  # a foreign entry
    ]
    for fields in others:
        assert fast_entry("t", b"5-0", fields, 1, settler) is None, fields


# -- publishing ------------------------------------------------------------------------------


async def test_publish_without_msg_id_is_xadd_and_publish_without_lua(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, herald.AsyncClient(url) as listener:
        await hub.declare(topic, durable=True)
        live: list[Message] = []
        await listener.subscribe(topic, handler=live.append)
        before = await command_calls(hub, "evalsha", "xadd", "publish")
        ack = await hub.publish(topic, {"n": 0})
        for i in range(1, 50):
            assert await hub.publish(topic, {"n": i}, confirm=False) is None
        await hub.publish_many(topic, [{"n": i} for i in range(50, 2500)])
        await hub.flush()
        after = await command_calls(hub, "evalsha", "xadd", "publish")
        assert after["evalsha"] == before["evalsha"]  # no script without msg_id
        assert after["xadd"] - before["xadd"] == 2500
        assert after["publish"] - before["publish"] >= 2500
        assert ack is not None
        assert ack.receivers == 1
        assert not ack.duplicate
        reply = await hub.execute("XRANGE", stream_key(topic), "-", "+")
        assert reply[0][0].decode() == ack.offset
        frames = [e[1][1] for e in reply]
        await wait_until(lambda: len(live) == 2500, 5, "every live copy")
        assert [m.raw for m in live] == frames  # the same bytes, in the same order
        assert [m.data["n"] for m in live] == list(range(2500))
        assert hub.stats.publish_errors == 0


async def test_msg_id_still_deduplicates_with_the_script(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        before = await command_calls(hub, "evalsha")
        first = await hub.publish(topic, "a", msg_id="m-1", confirm=True)
        again = await hub.publish(topic, "a", msg_id="m-1", confirm=True)
        assert (await command_calls(hub, "evalsha"))["evalsha"] - before["evalsha"] == 2
        assert again.duplicate
        assert again.offset == first.offset
        assert await hub.execute("XLEN", stream_key(topic)) == 1


async def test_a_refused_xadd_is_an_error_to_the_publisher(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        await hub.execute("SET", stream_key(topic), "not a stream")
        with pytest.raises(ServerError, match="WRONGTYPE"):
            await hub.publish(topic, "x")
        await hub.publish(topic, "y", confirm=False)
        await hub.publish_many(topic, ["z1", "z2"])
        await hub.flush()
        assert hub.stats.publish_errors == 3
        await hub.execute("DEL", stream_key(topic))
        ack = await hub.publish(topic, "ok", confirm=True)  # the connection is fine afterwards
        assert ack.offset


async def test_publish_many_trims_periodically(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True, max_len=10)
        await hub.publish_many(topic, list(range(2500)))
        await hub.flush()
        await asyncio.sleep(0.05)
        # a trim follows every 100 publishes (each chunk of up to 1000 counts as its size)
        assert await hub.execute("XLEN", stream_key(topic)) <= 10 + 1000


async def test_fire_and_forget_publishes_wait_out_an_outage(
    own_server: EmbeddedServer, topic: str
) -> None:
    async with herald.AsyncClient(own_server.url, probe_interval=0.2) as hub:
        await hub.declare(topic, durable=True)
        await hub.publish(topic, -1)
        own_server.stop()
        assert hub._link is not None
        link = hub._link
        await wait_until(lambda: not link.connected, 5, "the outage noticed")
        for i in range(200):  # buffered while disconnected
            await hub.publish(topic, i, confirm=False)
        await hub.publish_many(topic, list(range(200, 400)))
        await asyncio.to_thread(own_server.start)
        await hub.flush(timeout=15)
        assert await hub.execute("XLEN", stream_key(topic)) == 401
        assert hub.stats.publish_errors == 0


# -- consuming -------------------------------------------------------------------------------


async def test_acks_go_out_batched(url: str, topic: str) -> None:
    n = 3000
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        await hub.publish_many(topic, list(range(n)))
        await hub.flush()
        before = await command_calls(hub, "xack")
        got: list[int] = []
        c = await hub.consume(topic, "g", start="all", handler=lambda m: got.append(m.data))
        await wait_until(lambda: len(got) == n, 10, "every message")
        await c.close()
        xacks = (await command_calls(hub, "xack"))["xack"] - before["xack"]
        assert 1 <= xacks <= n // 20, xacks  # many ids per XACK, not one per message
        assert got == list(range(n))
        pending = await hub.execute("XPENDING", stream_key(topic), "g")
        assert pending[0] == 0


async def test_read_size_grows_only_while_the_application_waits(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        await hub.publish_many(topic, list(range(600)))
        await hub.flush()
        # A slow handler never waits for reads: the consumer keeps reading `batch` at once.
        sizes: list[int] = []
        slow: herald.Consumer

        async def handle(msg: DurableMessage) -> None:
            sizes.append(slow._read_size)
            await asyncio.sleep(0.002)

        slow = await hub.consume(topic, "slow", start="all", batch=20, handler=handle)
        await wait_until(lambda: len(sizes) == 600, 15, "the slow handler")
        await slow.close()
        assert set(sizes) == {20}
        # A fast one drains the backlog; once caught up the read size is back to `batch`.
        got: list[int] = []
        fast = await hub.consume(
            topic, "fast", start="all", batch=20, handler=lambda m: got.append(m.data)
        )
        await wait_until(lambda: len(got) == 600, 10, "the fast handler")
        await wait_until(lambda: fast._read_size == 20, 5, "the read size reset")
        assert fast._read_cap == 80
        await fast.close()
        assert got == list(range(600))


# -- the read path for new entries (read_messages) and the grouped XACK ids -----------------


def _read(entries: list[list[Any]]) -> list[list[Any]]:
    return parse_read([[b"herald:{t}:s", entries]])


def test_read_messages_builds_what_the_general_path_builds_in_stream_order() -> None:
    enc = Encoder("json")
    settler = _Settler()
    plain = [enc.envelope({"n": i}, None) for i in range(5)]
    headers = enc.envelope({"n": 5}, {"trace": "x"})
    entries: list[list[Any]] = [[f"{i}-0".encode(), [b"m", f]] for i, f in enumerate(plain)]
    entries.insert(2, [b"9-0", [b"m", headers]])  # not the fast kind: general path
    entries.insert(4, [b"10-0", None])  # deleted after it was read: general path
    entries.insert(0, [b"11-0", [b"m", plain[0]]])  # still held: skipped
    held = DurableMessage(decode_entry("t", [b"m", plain[0]]), "11-0", 1, settler)
    outstanding: dict[bytes, DurableMessage] = {b"11-0": held}
    out: list[DurableMessage] = []
    general: list[tuple[bytes, list[bytes]]] = []

    def slow(entry: bytes, fields: list[bytes]) -> DurableMessage | None:
        general.append((entry, fields))
        if not fields:
            return None  # acked away, not delivered
        return DurableMessage(decode_entry("t", fields), entry.decode(), 1, settler)

    added = read_messages("t", _read(entries), settler, outstanding, out.append, slow)

    assert added == 6
    assert [m.offset for m in out] == ["0-0", "1-0", "9-0", "2-0", "3-0", "4-0"]
    assert general == [(b"9-0", [b"m", headers]), (b"10-0", [])]
    assert outstanding[b"11-0"] is held
    assert {o: outstanding[o] for o in outstanding if o != b"11-0"} == {m._entry: m for m in out}
    for msg in out:
        offset = msg.offset
        fields = [b"m", headers] if offset == "9-0" else [b"m", plain[int(offset[0])]]
        assert_same_message(msg, DurableMessage(decode_entry("t", fields), offset, 1, settler))
    assert len({id(m.headers) for m in out}) == len(out)  # never shared


def test_read_messages_leaves_broken_frames_to_the_general_path() -> None:
    enc = Encoder("json")
    frame = enc.envelope({"id": 7}, None)
    odd = [
        [b"m", frame[:-1]],  # broken JSON
        [b"m", frame[:20]],  # a header cut short
        [b"m", Encoder("msgpack").envelope({"id": 7}, None)],
        [b"m", frame, b"k", b"key-1"],  # an ordering key
        [b"x", b"y"],  # a foreign entry
    ]
    seen: list[bytes] = []

    def slow(entry: bytes, fields: list[bytes]) -> DurableMessage | None:
        seen.append(entry)
        return None

    entries: list[list[Any]] = [[f"{i}-1".encode(), fields] for i, fields in enumerate(odd)]
    out: list[DurableMessage] = []
    added = read_messages("t", _read(entries), _Settler(), {}, out.append, slow)
    assert added == 0
    assert out == []
    assert seen == [f"{i}-1".encode() for i in range(len(odd))]


def test_parse_read_of_no_reply() -> None:
    assert parse_read(None) == []
    assert parse_read([]) == []


def test_bulk_strings_is_one_bulk_string_per_id() -> None:
    ids = [f"1764452831{i % 3}-{i * 37}".encode() for i in range(300)] + [b"1-1", b"10-10"]
    encoded = bulk_strings(ids)
    reader = hiredis.Reader()
    reader.feed(b"*%d\r\n" % len(ids) + encoded)
    got = reader.gets()
    assert sorted(got) == sorted(ids)
    assert bulk_strings([]) == b""
