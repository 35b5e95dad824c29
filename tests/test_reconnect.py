"""Faults under live pub/sub: server crash, killed connection, hung server, publishing in an outage.

Outages of the server itself use ``own_server`` (kill -9, SIGSTOP). Outages seen by the publisher
alone go through :class:`~herald.faults.proxy.Proxy`, a TCP relay the test takes down and brings
back, so that a subscriber connected straight to the server can count every message that was
buffered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

import herald
from herald import EmbeddedServer, Gap
from herald._io.link import Link
from herald.faults.proxy import Proxy

N = 1000


@pytest.fixture
def proxy(server: EmbeddedServer) -> Iterator[Proxy]:
    p = Proxy(server.port)
    p.up()
    try:
        yield p
    finally:
        p.close()


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``cond`` until true; return the seconds it took. Fails the test at the deadline."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def receive(sub: herald.Subscription, n: int, timeout: float = 5.0) -> list[object]:
    got: list[object] = []
    try:
        for _ in range(n):
            got.append((await sub.next(timeout)).data)
    except herald.Timeout:
        pytest.fail(f"received {len(got)} of {n} messages; last {got[-3:]}")
    return got


class GapRecorder:
    def __init__(self) -> None:
        self.gaps: list[Gap] = []
        self.event = asyncio.Event()

    def __call__(self, gap: Gap) -> None:
        self.gaps.append(gap)
        self.event.set()

    async def wait(self, timeout: float = 10.0) -> Gap:
        async with asyncio.timeout(timeout):
            await self.event.wait()
        return self.gaps[0]


async def assert_flows(hub: herald.AsyncClient, sub: herald.Subscription, topic: str) -> None:
    """N numbered messages published now all arrive, in order, and nothing else."""
    for i in range(N):
        await hub.publish(topic, i)
    assert await receive(sub, N) == list(range(N))
    with pytest.raises(herald.Timeout):
        await sub.next(0.2)


# -- the server dies -------------------------------------------------------------------------


async def test_kill_and_restart_resubscribes_and_reports_one_gap(
    own_server: EmbeddedServer, topic: str
) -> None:
    gaps = GapRecorder()
    async with (
        herald.AsyncClient(own_server.url, probe_interval=0.2) as hub,
        hub.subscribe(topic, on_gap=gaps) as sub,
    ):
        await hub.publish(topic, "before")
        assert (await sub.next(5)).data == "before"

        killed_at = time.time()
        own_server.kill()
        await asyncio.to_thread(own_server.start)
        gap = await gaps.wait()

        await assert_flows(hub, sub, topic)
        assert len(gaps.gaps) == 1
        assert gap.names == (topic,)
        # since: the last moment known receiving (a probe sent, the message "before"), so no
        # later than the kill; detected: when the lost connection was noticed, after it.
        assert gap.detected is not None
        assert killed_at - 1.0 <= gap.since <= killed_at + 0.05
        assert killed_at <= gap.detected <= gap.until <= time.time()
        assert "connection" in gap.reason
        assert sub.stats.gaps == 1
        assert sub.stats.dropped == 0
        stats = hub.stats
        assert stats.gaps == 1
        assert stats.reconnects >= 1
        assert stats.connected


async def test_client_kill_of_the_pubsub_connection(own_server: EmbeddedServer, topic: str) -> None:
    gaps = GapRecorder()
    async with (
        herald.AsyncClient(own_server.url, probe_interval=0.2) as hub,
        hub.subscribe(topic, on_gap=gaps) as sub,
    ):
        await hub.publish(topic, "before")
        assert (await sub.next(5)).data == "before"

        # The command connection is TYPE normal: only the subscriber's connection dies.
        assert await hub.execute("CLIENT", "KILL", "TYPE", "pubsub") == 1
        gap = await gaps.wait()
        assert gap.reason == "connection closed by server"

        await assert_flows(hub, sub, topic)
        assert len(gaps.gaps) == 1
        assert sub.stats.gaps == 1
        assert hub.stats.gaps == 1
        assert hub.stats.reconnects == 1
        numsub = await hub.execute("PUBSUB", "NUMSUB", topic)
        assert numsub == [topic.encode(), 1]


async def test_every_subscription_on_the_connection_gets_the_gap(
    own_server: EmbeddedServer, topic: str
) -> None:
    first, second = GapRecorder(), GapRecorder()
    async with herald.AsyncClient(own_server.url, probe_interval=0.2) as hub:
        sub1 = await hub.subscribe(topic, on_gap=first)
        sub2 = await hub.subscribe(f"{topic}.*", on_gap=second)
        await hub.execute("CLIENT", "KILL", "TYPE", "pubsub")
        await first.wait()
        await second.wait()
        await hub.publish(topic, 1)
        await hub.publish(f"{topic}.x", 2)
        assert (await sub1.next(5)).data == 1
        msg = await sub2.next(5)
        assert (msg.data, msg.topic, msg.pattern) == (2, f"{topic}.x", f"{topic}.*")
        assert (len(first.gaps), len(second.gaps), hub.stats.gaps) == (1, 1, 1)
        await sub1.close()
        await sub2.close()


async def test_hung_server_is_detected_by_probes(own_server: EmbeddedServer, topic: str) -> None:
    gaps = GapRecorder()
    async with (
        herald.AsyncClient(
            own_server.url, probe_interval=0.2, probe_timeout=0.2, connect_timeout=1.0
        ) as hub,
        hub.subscribe(topic, on_gap=gaps) as sub,
    ):
        await hub.publish(topic, "before")
        assert (await sub.next(5)).data == "before"

        # SIGSTOP: the sockets stay open and nothing answers, as with a dead host.
        subscriber = hub._subscriber
        assert subscriber is not None
        paused_at = time.time()
        own_server.pause()
        try:
            # Each declared dead after probe_interval + probe_timeout = 0.4s by its own probe;
            # allow for a busy box. Resumed only once both are (the probes' phases differ: a
            # server resumed as soon as the first one gave up could answer the other's probe).
            await wait_until(
                lambda: not hub.stats.connected and not subscriber.link.connected,
                1.0,
                "both connections declared dead",
            )
        finally:
            own_server.resume()
        gap = await gaps.wait()
        # The subscriber's connection was declared dead by its own probe, as quickly.
        assert gap.detected is not None
        assert gap.detected - paused_at < 1.0
        assert gap.since <= paused_at + 0.05  # the last probe answered before the pause
        assert gap.reason == "connection lost: no reply to probe within 0.2s"
        await assert_flows(hub, sub, topic)
        assert len(gaps.gaps) == 1
        assert hub.stats.connected
        assert hub.stats.reconnects >= 2  # both connections were replaced


# -- publishing while the server is unreachable ----------------------------------------------


async def test_publishes_in_an_outage_are_buffered_and_sent_after_reconnect(
    url: str, proxy: Proxy, topic: str
) -> None:
    async with (
        herald.AsyncClient(url) as reader,
        herald.AsyncClient(proxy.url, probe_interval=0.2) as hub,
    ):
        sub = await reader.subscribe(topic)
        assert (await hub.publish(topic, "before", confirm=True)).receivers == 1
        assert (await sub.next(5)).data == "before"

        proxy.down()
        await wait_until(lambda: not hub.stats.connected, 2.0, "outage noticed")
        started = time.monotonic()
        for i in range(N):
            await hub.publish(topic, i)  # returns at once: the buffer has room
        assert time.monotonic() - started < 1.0
        proxy.up()

        assert await receive(sub, N) == list(range(N))
        assert hub.stats.reconnects == 1
        with pytest.raises(herald.Timeout):
            await sub.next(0.2)
        await sub.close()


async def test_outage_buffer_is_bounded_and_publish_times_out(
    url: str, proxy: Proxy, topic: str
) -> None:
    limit = 4096
    async with (
        herald.AsyncClient(url) as reader,
        herald.AsyncClient(
            proxy.url, probe_interval=0.2, max_pending_bytes=limit, publish_timeout=0.1
        ) as hub,
    ):
        sub = await reader.subscribe(topic)
        await hub.publish(topic, "before", confirm=True)
        assert (await sub.next(5)).data == "before"
        link = hub._link
        assert isinstance(link, Link)
        assert link is not None

        proxy.down()
        await wait_until(lambda: not hub.stats.connected, 2.0, "outage noticed")
        accepted = 0
        payload = b"x" * 300
        refused: herald.Timeout | None = None
        while refused is None:
            try:
                await hub.publish(topic, b"%05d" % accepted + payload)
            except herald.Timeout as exc:
                refused = exc
            else:
                accepted += 1
                assert accepted < 100, "publish never pushed back"
        assert refused.timeout == 0.1
        assert 10 <= accepted <= 14  # ~4096 / ~330 bytes, plus the one that reached the bound
        full = link._pending_bytes
        assert full <= limit + 400

        # Every further publish is refused, in publish_timeout, and nothing more is kept.
        for _ in range(5):
            started = time.monotonic()
            with pytest.raises(herald.Timeout):
                await hub.publish(topic, b"refused" + payload)
            assert 0.09 <= time.monotonic() - started < 1.0
            assert link._pending_bytes == full

        proxy.up()
        assert await receive(sub, accepted) == [b"%05d" % i + payload for i in range(accepted)]
        with pytest.raises(herald.Timeout):
            await sub.next(0.3)  # the refused ones were never queued
        await sub.close()


def test_sync_outage_buffer_is_bounded_and_publish_times_out(
    url: str, proxy: Proxy, topic: str
) -> None:
    with (
        herald.Client(url) as reader,
        herald.Client(
            proxy.url, probe_interval=0.2, max_pending_bytes=2048, publish_timeout=0.1
        ) as hub,
        reader.subscribe(topic) as sub,
    ):
        hub.publish(topic, "before", confirm=True)
        assert sub.next(5).data == "before"
        proxy.down()
        deadline = time.monotonic() + 2
        while hub.stats.connected:
            assert time.monotonic() < deadline, "outage not noticed"
            time.sleep(0.005)
        accepted = 0
        while True:
            try:
                hub.publish(topic, accepted)
            except herald.Timeout:
                break
            accepted += 1
            assert accepted < 10_000, "publish never pushed back"
        for _ in range(3):
            with pytest.raises(herald.Timeout):
                hub.publish(topic, -1)
        proxy.up()
        assert [sub.next(5).data for _ in range(accepted)] == list(range(accepted))
        with pytest.raises(herald.Timeout):
            sub.next(0.3)


async def test_confirmed_publish_in_an_outage_times_out_and_is_not_sent(
    url: str, proxy: Proxy, topic: str
) -> None:
    async with (
        herald.AsyncClient(url) as reader,
        herald.AsyncClient(proxy.url, probe_interval=0.2, publish_timeout=0.3) as hub,
    ):
        sub = await reader.subscribe(topic)
        proxy.down()
        await wait_until(lambda: not hub.stats.connected, 2.0, "outage noticed")
        started = time.monotonic()
        with pytest.raises(herald.Timeout):
            await hub.publish(topic, "never", confirm=True)
        assert 0.25 <= time.monotonic() - started < 1.0

        proxy.up()
        await wait_until(lambda: hub.stats.connected, 5.0, "reconnected")
        assert (await hub.publish(topic, "after", confirm=True)).receivers == 1
        assert (await sub.next(5)).data == "after"  # "never" was not kept for later
        await sub.close()


async def test_confirmed_publish_rides_out_a_short_outage(
    url: str, proxy: Proxy, topic: str
) -> None:
    async with (
        herald.AsyncClient(url) as reader,
        herald.AsyncClient(proxy.url, probe_interval=0.2, publish_timeout=10) as hub,
    ):
        sub = await reader.subscribe(topic)
        proxy.down()
        await wait_until(lambda: not hub.stats.connected, 2.0, "outage noticed")
        task = asyncio.create_task(hub.publish(topic, "waited", confirm=True))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()
        proxy.up()
        assert (await asyncio.wait_for(task, 5)).receivers == 1
        assert (await sub.next(5)).data == "waited"
        await sub.close()


async def test_confirmed_publish_in_flight_when_the_connection_dies(
    url: str, proxy: Proxy, topic: str
) -> None:
    async with (
        herald.AsyncClient(url) as reader,
        herald.AsyncClient(proxy.url, probe_interval=0) as hub,
    ):
        sub = await reader.subscribe(topic)
        proxy.blackhole = True
        task = asyncio.create_task(hub.publish(topic, "lost", confirm=True))
        await wait_until(lambda: proxy.swallowed > 0, 2.0, "publish written")
        proxy.blackhole = False
        proxy.down()
        with pytest.raises(herald.ConnectionLost):
            await asyncio.wait_for(task, 5)
        proxy.up()
        await wait_until(lambda: hub.stats.connected, 5.0, "reconnected")
        assert (await hub.publish(topic, "next", confirm=True)).receivers == 1
        assert (await sub.next(5)).data == "next"
        await sub.close()


async def test_subscribe_during_an_outage_waits_for_the_reconnect(
    url: str, proxy: Proxy, topic: str
) -> None:
    async with (
        herald.AsyncClient(url) as writer,
        herald.AsyncClient(proxy.url, probe_interval=0.2, subscribe_timeout=0.3) as impatient,
        herald.AsyncClient(proxy.url, probe_interval=0.2, subscribe_timeout=10) as patient,
    ):
        # Both subscriber connections exist before the outage.
        subs = [await impatient.subscribe(f"{topic}.a"), await patient.subscribe(f"{topic}.b")]
        proxy.down()
        await wait_until(
            lambda: not (impatient.stats.connected or patient.stats.connected), 2.0, "outage"
        )
        with pytest.raises(herald.Timeout):
            await impatient.subscribe(f"{topic}.refused")
        pending = asyncio.create_task(patient.subscribe(topic).start())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not pending.done()
        proxy.up()
        sub = await asyncio.wait_for(pending, 10)
        assert (await writer.publish(topic, "hello", confirm=True)).receivers == 1
        assert (await sub.next(5)).data == "hello"
        # The refused subscription was forgotten, not resubscribed behind the user's back.
        await wait_until(lambda: impatient.stats.gaps == 1, 10.0, "impatient resubscribed")
        refused = f"{topic}.refused"
        assert await writer.execute("PUBSUB", "NUMSUB", refused) == [refused.encode(), 0]
        for s in [sub, *subs]:
            await s.close()


async def test_a_server_loading_its_data_is_waited_for(
    own_server: EmbeddedServer, topic: str
) -> None:
    """After a restart the server answers LOADING until its AOF is read: the client waits for
    it instead of handing the error to a publisher."""
    async with herald.AsyncClient(own_server.url) as hub:
        await hub.declare(topic, durable=True)
        # 2,000 keys, loaded at 0.5 ms each (the server's key-load-delay): ~1 s of LOADING.
        await hub.execute(
            "EVAL", "for i = 1, 2000 do redis.call('SET', 'fill:' .. i, i) end return 1", 0
        )
        await hub.execute("BGREWRITEAOF")  # into the AOF's RDB base, where the delay applies

        async def rewritten() -> bool:
            info = await hub.execute("INFO", "persistence")
            return b"aof_rewrite_in_progress:0" in info and b"aof_rewrite_scheduled:0" in info

        for _ in range(200):
            if await rewritten():
                break
            await asyncio.sleep(0.05)
        own_server.kill()
        await wait_until(lambda: not hub.stats.connected, 5.0, "the client saw the crash")
        own_server.args = [
            *own_server.args,
            "--key-load-delay", "500",
            "--loading-process-events-interval-bytes", "1024",  # answer LOADING meanwhile
        ]  # fmt: skip
        own_server.launch()  # not waiting: the client reconnects while the server loads
        try:
            for i in range(20):
                ack = await hub.publish(topic, i, confirm=True)
                assert ack is not None
        finally:
            await asyncio.to_thread(own_server.wait_ready)
        assert await hub.execute("XLEN", f"herald:{{{topic}}}:s") == 20


async def test_a_gap_window_holds_every_message_missed_on_a_half_open_link(
    server: EmbeddedServer, proxy: Proxy
) -> None:
    """The proxy stops forwarding without a reset: the probe finds it out only after
    ``probe_timeout``. The Gap's ``since`` is the last moment the link was known to be
    receiving, not that moment, so every message missed was published inside the window
    (``since`` used to be the detection time: the first ~0.5 s of the loss lay outside)."""
    gaps: list[Gap] = []
    got: set[int] = set()
    published: dict[int, tuple[float, float]] = {}  # number -> (before, after) the publish
    async with (
        herald.AsyncClient(server.url) as pub,
        herald.AsyncClient(proxy.url, probe_interval=0.25, probe_timeout=0.5) as hub,
    ):
        sub = await hub.subscribe(
            "halfopen.gap", handler=lambda m: got.add(m.data), on_gap=gaps.append
        )
        assert sub is not None
        stop = asyncio.Event()

        async def feed() -> None:
            n = 0
            while not stop.is_set():
                before = time.time()
                await pub.publish("halfopen.gap", n, confirm=True)
                published[n] = (before, time.time())
                n += 1
                await asyncio.sleep(0.002)

        task = asyncio.create_task(feed())
        await wait_until(lambda: len(got) > 50, 5, "messages before the fault")
        proxy.freeze()
        await wait_until(lambda: not hub.stats.connected, 5, "the probe declaring it dead")
        proxy.thaw()
        await wait_until(lambda: bool(gaps), 10, "the gap report")
        await asyncio.sleep(0.3)
        stop.set()
        await task
        last = max(published)
        await wait_until(lambda: last in got, 5, "the last message")
    missed = sorted(set(published) - got)
    assert len(gaps) == 1
    assert len(missed) > 50  # the link was silent for about probe_interval + probe_timeout
    gap = gaps[0]
    outside = [
        n for n in missed if not (gap.since <= published[n][1] and published[n][0] <= gap.until)
    ]
    assert outside == [], f"{len(outside)} of {len(missed)} missed messages outside the window"
    assert gap.detected is not None
    assert gap.since < gap.detected < gap.until
