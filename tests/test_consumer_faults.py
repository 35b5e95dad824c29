"""Durable topics under faults: consumers killed -9, stuck or failing; servers killed and flushed.

Every message carries a sequence number; tests check by them that nothing is missing and that
what was acked is never delivered again.
"""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import herald
from herald import DurableMessage, EmbeddedServer
from herald._core.streams import stream_key
from herald._core.wire import MAGIC


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def dead_letters(
    hub: herald.AsyncClient, topic: str, n: int, timeout: float = 5.0
) -> list[DurableMessage]:
    async with hub.consume(f"{topic}.dead", "inspect", start="all") as dead:
        letters = [await dead.next(timeout) for _ in range(n)]
        for m in letters:
            await m.ack()
        with pytest.raises(herald.Timeout):
            await dead.next(0.2)
    return letters


# -- a consumer process killed -9 ------------------------------------------------------------

CONSUMER = """
    import asyncio, sys, herald

    async def main(url, topic):
        async with herald.AsyncClient(url) as hub:
            async with hub.consume(topic, "g", "child", ack_wait=0.5, batch=20) as c:
                print("ready", flush=True)
                async for msg in c:
                    await asyncio.sleep(0.002)
                    await msg.ack(confirm=True)
                    print(msg.data, flush=True)  # only once the server has the ack

    asyncio.run(main(*sys.argv[1:]))
"""


class Child:
    def __init__(self, script: str, *args: str, tmp: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TMPDIR": str(tmp)},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = 10.0) -> str:
        line = self.lines.get(timeout=timeout)
        if line is None:
            self.proc.wait()
            assert self.proc.stderr is not None
            pytest.fail(f"child exited early:\n{self.proc.stderr.read()}")
        return line

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def start(script: str, *args: str) -> Child:
        children.append(Child(script, *args, tmp=tmp_path))
        return children[-1]

    yield start
    for child in children:
        child.kill()


async def test_consumer_killed_mid_batch_loses_nothing(
    url: str, topic: str, spawn: Callable[..., Child]
) -> None:
    n = 300
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        child = spawn(CONSUMER, url, topic)
        assert child.line() == "ready"
        for i in range(n):
            await hub.publish(topic, i)
        acked_by_child: set[int] = set()
        while len(acked_by_child) < 100:
            acked_by_child.add(int(await asyncio.to_thread(child.line)))
        child.kill()  # kill -9, with a batch read and in hand
        # Anything after the last acked line may or may not have been acked: that is fine.
        while True:
            try:
                acked_by_child.add(int(child.lines.get_nowait() or "x"))
            except (queue.Empty, ValueError):
                break

        got: dict[int, int] = {}
        async with hub.consume(topic, "g", "survivor", ack_wait=0.5) as c:
            missing = set(range(n)) - acked_by_child
            while missing - got.keys():
                msg = await c.next(5)
                assert msg.data not in acked_by_child, f"{msg.data} was acked, then redelivered"
                assert msg.data not in got, f"{msg.data} delivered twice to one consumer"
                got[msg.data] = msg.deliveries
                await msg.ack()
        assert acked_by_child | got.keys() == set(range(n))
        # What the child had read but not acked came back after ack_wait, as a redelivery.
        redelivered = {i for i, d in got.items() if d > 1}
        assert redelivered
        assert max(redelivered) < min(i for i, d in got.items() if d == 1)
        info = await hub.execute("XINFO", "GROUPS", stream_key(topic))
        assert info[0][5] == 0  # nothing pending


# -- redelivery and dead letters -------------------------------------------------------------


async def test_poison_message_is_dead_lettered_after_exactly_max_deliver(
    url: str, topic: str
) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        calls: list[tuple[str, int]] = []

        def handler(msg: DurableMessage) -> None:
            calls.append((msg.data, msg.deliveries))
            if msg.data == "poison":
                raise ValueError("cannot bill this")

        c = await hub.consume(topic, "billing", handler=handler, ack_wait=0.3, max_deliver=3)
        await hub.publish(topic, "poison")
        await hub.publish(topic, "fine")
        (letter,) = await dead_letters(hub, topic, 1)
        await asyncio.sleep(0.5)  # nothing more comes
        await c.close()
        assert [d for data, d in calls if data == "poison"] == [1, 2, 3]
        assert [d for data, d in calls if data == "fine"] == [1]
        assert letter.data == "poison"
        assert letter.headers["herald-deliveries"] == "3"
        assert "ValueError: cannot bill this" in letter.headers["herald-reason"]
        assert letter.headers["herald-topic"] == topic
        assert letter.headers["herald-group"] == "billing"
        assert letter.headers["herald-consumer"] == c.name
        assert abs(int(letter.headers["herald-time"]) / 1000 - time.time()) < 10
        assert c.stats.dead_lettered == 1
        assert c.stats.handler_errors == 3


async def test_a_message_never_settled_is_dead_lettered_by_the_claim(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        key = stream_key(topic)
        await hub.execute("XGROUP", "CREATE", key, "g", "$", "MKSTREAM")
        ack = await hub.publish(topic, "stuck", confirm=True)
        # A consumer read it and vanished (delivery 1).
        await hub.execute("XREADGROUP", "GROUP", "g", "ghost", "STREAMS", key, ">")
        async with hub.consume(topic, "g", ack_wait=0.2, max_deliver=2) as c:
            msg = await c.next(3)  # reclaimed from the ghost: delivery 2
            assert (msg.data, msg.deliveries) == ("stuck", 2)
            # ...and never settled: the next reclaim would be a third delivery
            (letter,) = await dead_letters(hub, topic, 1)
        assert letter.headers["herald-offset"] == ack.offset
        assert letter.headers["herald-deliveries"] == "2"
        assert "max_deliver" in letter.headers["herald-reason"]


async def test_nak_delay_is_honoured(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        async with (
            hub.consume(topic, "g", "a", ack_wait=1.0) as a,
            hub.consume(topic, "g", "b", ack_wait=1.0) as b,
        ):
            await hub.publish(topic, "later")
            first = await next_of(a, b)
            naked_at = time.monotonic()
            await first.nak(delay=0.4)
            again = await next_of(a, b, timeout=2)
            waited = time.monotonic() - naked_at
            assert 0.4 <= waited < 0.8, waited
            assert (again.data, again.deliveries) == ("later", 2)
            await again.ack()


async def test_nak_delay_longer_than_ack_wait_is_honoured(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        async with (
            hub.consume(topic, "g", "a", ack_wait=0.2) as a,
            hub.consume(topic, "g", "b", ack_wait=0.2) as b,
        ):
            await hub.publish(topic, "much later")
            first = await next_of(a, b)
            naked_at = time.monotonic()
            await first.nak(delay=1.0)  # five times ack_wait: kept by a meanwhile
            again = await next_of(a, b, timeout=3)
            waited = time.monotonic() - naked_at
            assert 1.0 <= waited < 1.4, waited
            assert again.deliveries == 2


async def next_of(*consumers: herald.Consumer, timeout: float = 5.0) -> DurableMessage:
    """The first message any of ``consumers`` receives."""
    tasks = [asyncio.ensure_future(c.next(timeout)) for c in consumers]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return next(iter(done)).result()


async def test_in_progress_prevents_reclaim(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        async with hub.consume(topic, "g", "slow", ack_wait=0.4) as slow:
            await hub.publish(topic, "long job")
            msg = await slow.next(3)
            async with hub.consume(topic, "g", "other", ack_wait=0.4) as other:
                for _ in range(6):  # 1.2 s of work: three times ack_wait
                    await asyncio.sleep(0.2)
                    await msg.in_progress()
                with pytest.raises(herald.Timeout):
                    await other.next(0.1)
                await msg.ack(confirm=True)
                with pytest.raises(herald.Timeout):
                    await other.next(0.6)
            assert msg.deliveries == 1
            # Without in_progress the other consumer would have taken it: check the control.
            await hub.publish(topic, "abandoned")
            held = await slow.next(3)
            async with hub.consume(topic, "g", "other", ack_wait=0.4) as other:
                taken = await other.next(3)
            assert (taken.data, taken.deliveries) == ("abandoned", 2)
            assert held.offset == taken.offset


async def test_term_goes_straight_to_the_dead_letters(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        async with hub.consume(topic, "g", ack_wait=0.2) as c:
            ack = await hub.publish(
                topic, {"order": 7}, headers={"traceparent": "00-abc-01"}, confirm=True
            )
            msg = await c.next(3)
            started = time.monotonic()
            await msg.term("invalid order")
            (letter,) = await dead_letters(hub, topic, 1)
            assert time.monotonic() - started < 1
            with pytest.raises(herald.Timeout):
                await c.next(0.5)  # never again
        assert letter.data == {"order": 7}
        assert letter.id == msg.id
        assert letter.headers["traceparent"] == "00-abc-01"
        assert letter.headers["herald-reason"] == "invalid order"
        assert letter.headers["herald-deliveries"] == "1"
        assert letter.headers["herald-offset"] == ack.offset
        assert c.stats.termed == 1


async def test_undecodable_payloads_are_dead_lettered_never_handled(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        handled: list[object] = []
        c = await hub.consume(topic, "g", handler=handled.append, ack_wait=0.2)
        key = stream_key(topic)
        broken = MAGIC + b"\x01\x00\x01" + b"\x00" * 24 + b"{not json"
        await hub.execute("XADD", key, "*", "m", broken)
        await hub.execute("XADD", key, "*", "m", b"plain bytes from redis-cli")
        await hub.execute("XADD", key, "*", "other", b"no m field")
        await hub.publish(topic, "fine")
        await wait_until(lambda: len(handled) == 3, 3, "the decodable messages handled")
        (letter,) = await dead_letters(hub, topic, 1)
        await asyncio.sleep(0.4)
        await c.close()
        # Foreign entries are delivered raw, as foreign payloads on a channel are.
        assert [m.data for m in handled] == [  # type: ignore[attr-defined]
            b"plain bytes from redis-cli",
            {b"other": b"no m field"},
            "fine",
        ]
        assert letter.headers["herald-reason"].startswith("undecodable: payload is not valid json")
        assert letter.raw == broken
        assert letter.decode_error is not None
        assert c.stats.decode_errors == 1
        assert c.stats.dead_lettered == 1
        assert c.stats.handler_errors == 0


# -- the server: killed, flushed -------------------------------------------------------------


@pytest.mark.slow
async def test_server_killed_with_aof_keeps_every_acknowledged_publish(
    own_server: EmbeddedServer, topic: str
) -> None:
    n = 1500
    async with herald.AsyncClient(own_server.url, probe_interval=0.2) as hub:
        await hub.declare(topic, durable=True)
        acked: dict[int, str] = {}
        unknown: set[int] = set()

        async def publish() -> None:
            for i in range(n):
                try:
                    ack = await hub.publish(topic, i, confirm=True)
                except herald.ConnectionLost:
                    unknown.add(i)  # in flight when the server died
                    continue
                assert isinstance(ack.offset, str)
                acked[i] = ack.offset

        task = asyncio.create_task(publish())
        await wait_until(lambda: len(acked) >= 500, 10, "publishing")
        own_server.kill()
        await asyncio.to_thread(own_server.start)
        await asyncio.wait_for(task, 20)
        reply = await hub.execute("XRANGE", stream_key(topic), "-", "+")
        stored: dict[str, bytes] = {e[0].decode(): e[1][1] for e in reply}
        async with hub.consume(topic, "check", start="all") as c:
            got = {}
            for _ in range(len(stored)):
                m = await c.next(5)
                got[m.offset] = m.data
                await m.ack()
        assert len(acked) + len(unknown) == n
        assert len(unknown) < 50
        for i, offset in acked.items():
            assert got.get(offset) == i, f"acknowledged publish {i} lost"
        values = sorted(got.values())
        assert len(values) == len(set(values))  # no message stored twice
        assert set(values) >= set(acked)
        assert (await hub.topics())[topic].durable  # the policy is persisted too


@pytest.mark.slow
async def test_nogroup_after_flushall_is_repaired(own_server: EmbeddedServer, topic: str) -> None:
    async with herald.AsyncClient(own_server.url, policy_refresh=0.05) as hub:
        await hub.declare(topic, durable=True, max_len=1000)
        async with hub.consume(topic, "g", ack_wait=0.5) as c:
            await hub.publish(topic, "before")
            await (await c.next(3)).ack()
            await hub.execute("FLUSHALL")
            await wait_until(lambda: c.stats.repairs >= 1, 5, "the group recreated")
            # The consumer restored the flushed policy; publishers follow within policy_refresh.
            assert (await hub.topics())[topic] == herald.TopicPolicy(durable=True, max_len=1000)
            await wait_until(lambda: hub._prefix(topic)[2] is not None, 2, "durable again")
            await hub.publish(topic, "after")
            msg = await c.next(3)
            assert msg.data == "after"
            await msg.ack()
            await asyncio.sleep(1.0)
            assert c.stats.repairs == 1  # repaired once, no loop
        info = await hub.execute("XINFO", "GROUPS", stream_key(topic))
        assert info[0][1] == b"g"


@pytest.mark.slow
async def test_nogroup_is_retried_with_backoff(own_server: EmbeddedServer, topic: str) -> None:
    async with herald.AsyncClient(own_server.url) as hub:
        await hub.declare(topic, durable=True)
        async with hub.consume(topic, "g") as c:
            # Destroy the group again and again: the consumer repairs each time, never spins.
            for _ in range(3):
                await hub.execute("XGROUP", "DESTROY", stream_key(topic), "g")
                await asyncio.sleep(0.3)
            assert 1 <= c.stats.repairs <= 6
            await hub.publish(topic, "still there")
            assert (await c.next(3)).data == "still there"


async def test_consumer_connection_killed_resumes(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        got: list[int] = []
        c = await hub.consume(topic, "g", handler=lambda m: got.append(m.data), ack_wait=5)
        for i in range(100):
            await hub.publish(topic, i)
        await wait_until(lambda: len(got) == 100, 5, "first half")
        clients = (await hub.execute("CLIENT", "LIST")).decode().splitlines()
        (reader,) = [line for line in clients if "-consume " in line]
        client_id = reader.split()[0].split("=")[1]
        assert await hub.execute("CLIENT", "KILL", "ID", client_id) == 1
        for i in range(100, 200):
            await hub.publish(topic, i)
        await wait_until(lambda: len(got) == 200, 10, "second half after the reconnect")
        assert got == list(range(200))
        await c.close()


@pytest.mark.slow
async def test_consumer_survives_a_server_restart(own_server: EmbeddedServer, topic: str) -> None:
    async with herald.AsyncClient(own_server.url, probe_interval=0.2) as hub:
        await hub.declare(topic, durable=True)
        got: list[int] = []
        c = await hub.consume(topic, "g", "w", handler=lambda m: got.append(m.data), ack_wait=1)
        for i in range(200):
            await hub.publish(topic, i)
        await wait_until(lambda: len(got) == 200, 5, "before the crash")
        await asyncio.sleep(0.1)  # let the acks reach the server
        own_server.kill()
        await asyncio.to_thread(own_server.start)
        for i in range(200, 400):
            while True:
                try:
                    await hub.publish(topic, i)
                    break
                except herald.ConnectionLost:
                    await asyncio.sleep(0.05)
        await wait_until(lambda: set(got) >= set(range(400)), 15, "everything after the restart")
        await asyncio.sleep(0.3)
        await c.close()
        assert c.stats.handler_errors == 0
        # at least once: a message may come twice (an ack lost in the crash), none is missing
        assert sorted(set(got)) == list(range(400))


@pytest.mark.slow
async def test_close_does_not_hang_on_a_hung_server(
    own_server: EmbeddedServer, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import herald._durable.consumer

    monkeypatch.setattr(herald._durable.consumer, "CLOSE_TIMEOUT", 0.3)
    async with herald.AsyncClient(own_server.url, probe_interval=0) as hub:
        await hub.declare(topic, durable=True)
        c = await hub.consume(topic, "g")
        await hub.publish(topic, "held")
        msg = await c.next(3)
        own_server.pause()
        try:
            await msg.ack()  # queued, never answered
            started = time.monotonic()
            await c.close()
            assert time.monotonic() - started < 1.5
        finally:
            own_server.resume()


async def test_a_reclaimed_backlog_is_not_taken_again_while_it_is_being_handled(
    url: str, topic: str
) -> None:
    """A dead consumer held 600 entries; a survivor reclaims them all in one pass (10 batches)
    and works through them for longer than ack_wait. The idle clock of an entry runs from the
    claim, so the tail used to become claimable while it still sat in the survivor's buffer:
    the other survivor took it and both handled it, well before ack_wait had passed since the
    first one got it. Entries still buffered are now leased while the consumer makes progress."""
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        key = stream_key(topic)
        await hub.execute("XGROUP", "CREATE", key, "g", "$", "MKSTREAM")
        for i in range(600):
            await hub.publish(topic, i, confirm=False)
        await hub.flush()
        await hub.execute("XREADGROUP", "GROUP", "g", "dead", "COUNT", 600, "STREAMS", key, ">")
        handled: dict[int, list[tuple[str, float]]] = {}

        def handler(name: str) -> Callable[[DurableMessage], Any]:
            async def handle(msg: DurableMessage) -> None:
                handled.setdefault(msg.data, []).append((name, time.monotonic()))
                await asyncio.sleep(0.004)  # ~250/s: 600 take 2.4 s, ack_wait is 1 s

            return handle

        async with (
            herald.AsyncClient(url) as a,
            herald.AsyncClient(url) as b,
            a.consume(topic, "g", "a", ack_wait=1.0, handler=handler("a")),
            b.consume(topic, "g", "b", ack_wait=1.0, handler=handler("b")),
        ):
            await wait_until(lambda: len(handled) >= 600, 20, "every entry handled")
            await asyncio.sleep(1.5)
    twice = {n: h for n, h in handled.items() if len(h) > 1}
    assert len(handled) == 600
    assert twice == {}, f"{len(twice)} handled twice, e.g. {next(iter(twice.items()))}"
