"""Hostile input: Hypothesis fuzzing of the wire-format decoder and batch frames (never raises,
never hangs), and a stateful test of publish/subscribe/ack/claim/reconnect on a durable topic
against a reference model. Bounded for CI; ``herald faults run -s hostile-input --scale full``
runs the decoder fuzzer for longer."""

from __future__ import annotations

import asyncio
import struct
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import herald
from herald import EmbeddedServer, Message
from herald._core.streams import decode_entry
from herald._core.wire import MAGIC, VERSION, Encoder, batch, decode

FUZZ = settings(
    max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow]
)  # a 1 s deadline per example: a decoder that hangs fails it

enc = Encoder("json", b"\x07" * 8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
headers = st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=10), max_size=3)


def check(msgs: list[Message]) -> None:
    assert msgs, "decode returned nothing"
    for m in msgs:
        assert isinstance(m, Message)
        _ = (m.data, m.headers, m.id, m.offset, m.timestamp, m.content_type)


@FUZZ
@given(st.binary(max_size=2048))
def test_decode_never_raises_on_any_bytes(raw: bytes) -> None:
    check(decode("t", raw))
    check(decode("t", MAGIC + raw))
    check(decode("t", MAGIC + bytes([VERSION]) + raw))


@FUZZ
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=8), st.data())
def test_decode_never_raises_on_batch_frames_of_anything(inner: list[bytes], data: Any) -> None:
    frame = bytearray(batch(inner))
    if data.draw(st.booleans()):  # then break a length or the count
        pos = data.draw(st.integers(0, len(frame)))
        frame[pos : pos + 4] = struct.pack(">I", data.draw(st.integers(0, 2**32 - 1)))
    msgs = decode("t", bytes(frame))
    check(msgs)
    check([decode_entry("t", [b"m", bytes(frame)])])


@FUZZ
@given(
    st.lists(
        st.tuples(json_values, headers, st.none() | st.integers(0, 2**64 - 1)),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 10_000),
    st.binary(max_size=8),
)
def test_valid_batches_round_trip_and_mutants_do_not_crash(
    items: list[tuple[Any, dict[str, str], int | None]], cut: int, junk: bytes
) -> None:
    envs = [
        enc.envelope(v, h or None, offset=o, epoch=1 if o is not None else None)
        for v, h, o in items
    ]
    frame = batch(envs)
    msgs = decode("t", frame)
    assert [m.data for m in msgs] == [v for v, _, _ in items]
    assert all(m.decode_error is None for m in msgs)
    # Truncated or with junk inserted: one broken message or several, never an exception.
    mutant = frame[: cut % len(frame)] + junk + frame[cut % len(frame) :]
    check(decode("t", mutant))


def test_deeply_nested_payload_is_a_decode_error_not_a_crash() -> None:
    for opener in (b"[", b"{", b"\x91"):
        raw = enc.envelope(None)[:-4] + opener * 100_000
        (msg,) = decode("t", raw)
        assert msg.decode_error is not None
        assert msg.data == opener * 100_000  # the payload, kept undecoded


# -- a stateful test against a reference model -----------------------------------------------


async def confirmed_ack(msg: herald.DurableMessage) -> bool:
    """Ack and wait for the server; False when the connection died with the ack in flight."""
    try:
        await msg.ack(confirm=True)
    except herald.ConnectionLost:
        return False
    return True


class DurableModel(RuleBasedStateMachine):
    """Publishes, a live subscription, two consumers of one group with acks, reclaims after
    ack_wait, and killed connections, against what the model says must hold:

    - a consumer never gets a message that was not published; a message whose ack was
      confirmed is not pending any more (a copy reclaimed before the ack landed may still be
      handed out once, as a redelivery);
    - the live subscription gets the messages in publish order, none twice, and misses one only
      when a gap was reported;
    - at the end every published message is delivered to the group and nothing stays pending.
    """

    url = ""
    ACK_WAIT = 0.2

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.topic = f"fz{uuid.uuid4().hex[:10]}"
        self.published: list[int] = []
        self.acked: set[int] = set()
        self.held: dict[str, list[herald.DurableMessage]] = {"a": [], "b": []}
        self.live: list[int] = []
        self.gaps = 0
        self.run(self._start())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 20))

    async def _start(self) -> None:
        self.hub = herald.AsyncClient(self.url, probe_interval=0.2)
        self.admin = herald.AsyncClient(self.url, probe_interval=0)
        await self.hub.declare(self.topic, durable=True)
        self.sub = await self.hub.subscribe(self.topic, on_gap=self._gap)
        self.consumers = {
            name: await self.hub.consume(self.topic, "g", name, ack_wait=self.ACK_WAIT)
            for name in ("a", "b")
        }

    def _gap(self, gap: herald.Gap) -> None:
        self.gaps += 1

    @rule(n=st.integers(1, 5))
    def publish(self, n: int) -> None:
        async def go() -> None:
            for _ in range(n):
                seq = len(self.published)
                while True:
                    try:
                        await self.hub.publish(self.topic, seq, msg_id=f"m{seq}")
                        break
                    except (herald.ConnectionLost, herald.Timeout):
                        await asyncio.sleep(0.05)  # the same msg_id: stored once
                self.published.append(seq)

        self.run(go())

    @rule(name=st.sampled_from(["a", "b"]))
    def receive(self, name: str) -> None:
        async def go() -> None:
            try:
                msg = await self.consumers[name].next(0.05)
            except herald.Timeout:
                return
            assert msg.data in self.published, f"unexpected {msg.data}"
            if msg.data in self.acked:
                # A copy reclaimed (ack_wait passed) into a consumer's buffer before the ack
                # reached the server: at least once allows it, provided the confirmed ack did
                # reach the server (the entry is no longer pending).
                assert msg.deliveries > 1, f"{msg.data} delivered after a confirmed ack"
                stream, entry = f"herald:{{{self.topic}}}:s", str(msg.offset)
                pending = await self.admin.execute("XPENDING", stream, "g", entry, entry, 1)
                assert pending == [], f"{msg.data} still pending after a confirmed ack"
            self.held[name].append(msg)

        self.run(go())

    @rule(name=st.sampled_from(["a", "b"]))
    def ack(self, name: str) -> None:
        if not self.held[name]:
            return
        msg = self.held[name].pop(0)

        async def go() -> None:
            try:
                await msg.ack(confirm=True)
            except herald.ConnectionLost:
                return  # unknown: it may be delivered again
            self.acked.add(msg.data)

        self.run(go())

    @rule()
    def claim(self) -> None:
        """Let ack_wait pass: what is held and not acked may go to the other consumer."""
        self.run(asyncio.sleep(self.ACK_WAIT * 2))

    @rule(kind=st.sampled_from(["normal", "pubsub"]))
    def reconnect(self, kind: str) -> None:
        self.run(self.admin.execute("CLIENT", "KILL", "TYPE", kind, "SKIPME", "yes"))

    @invariant()
    def live_in_order(self) -> None:
        while self.sub.pending:
            self.live.append(self.run(self.sub.next(1)).data)
        assert self.live == sorted(set(self.live)), "live messages reordered or repeated"
        missing = len(
            set(self.published[: (self.live[-1] + 1) if self.live else 0]) - set(self.live)
        )
        assert missing == 0 or self.gaps > 0, f"{missing} live messages missed without a gap"

    def teardown(self) -> None:
        try:
            self.run(self._drain())
        finally:
            self.run(self._close())
            self.loop.close()

    async def _drain(self) -> None:
        """Take and ack everything until every message is acked and nothing is pending (an ack
        lost with its connection is not confirmed, and the entry comes back after ack_wait)."""
        got = set(self.acked)
        for held in self.held.values():  # held here: a reclaim by the holder keeps them here
            for msg in held:
                if await confirmed_ack(msg):
                    got.add(msg.data)
            held.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        stream = f"herald:{{{self.topic}}}:s"
        while True:
            for name, c in self.consumers.items():
                assert not c.closed, f"consumer {name} stopped: {c.error!r}"
                try:
                    msg = await c.next(0.05)
                except herald.Timeout:
                    continue
                assert msg.data in self.published
                if await confirmed_ack(msg):
                    got.add(msg.data)
            if got >= set(self.published):
                pending = int((await self.admin.execute("XPENDING", stream, "g"))[0])
                if pending == 0:
                    return
            assert loop.time() < deadline, (
                f"never delivered and acked: {sorted(set(self.published) - got)}; "
                f"pending {await self.admin.execute('XPENDING', stream, 'g')}"
            )

    async def _close(self) -> None:
        await self.sub.close()
        await self.hub.close()
        await self.admin.close()


@pytest.mark.timeout(120)
def test_durable_topic_against_a_model(server: EmbeddedServer) -> None:
    DurableModel.url = server.url
    run_state_machine_as_test(
        DurableModel,
        settings=settings(
            max_examples=8,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: bounded time
        ),
    )
