"""Recoverable topics: offsets, history, and catch-up across cut connections, counted.

Every fault test compares what a subscriber got with the topic's history on the server: each
offset exactly once, in order, from where the subscription started to the last one published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import herald
from herald._core.history import history_key
from herald._core.wire import Encoder, batch
from herald.faults.proxy import Proxy

pytestmark = pytest.mark.timeout(90)

Got = list[herald.Message | herald.HistoryLost]


async def _collect(sub: herald.Subscription, into: Got) -> None:
    """Read a subscription until it is closed, keeping messages and HistoryLost reports."""
    while True:
        try:
            into.append(await sub.__anext__())
        except herald.HistoryLost as lost:
            into.append(lost)
        except StopAsyncIteration:
            return


@contextlib.asynccontextmanager
async def publishing(
    hub: herald.AsyncClient, topics: list[str], rate: float
) -> AsyncIterator[list[int]]:
    """Publish numbered messages round-robin over ``topics`` at about ``rate`` per second until
    the block ends; yields the count published so far (one-element list)."""
    count = [0]

    async def run() -> None:
        start = time.monotonic()
        while True:
            due = int((time.monotonic() - start) * rate)
            while count[0] < due:
                topic = topics[count[0] % len(topics)]
                await hub.publish(topic, count[0])
                count[0] += 1
            await asyncio.sleep(0.002)

    task = asyncio.create_task(run())
    try:
        yield count
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await hub.flush()


async def top_offset(hub: herald.AsyncClient, topic: str) -> int:
    reply = await hub.execute("XREVRANGE", history_key(topic), "+", "-", "COUNT", 1)
    return int(reply[0][0].split(b"-")[1]) if reply else 0


async def settle(
    got: list[herald.Message | herald.HistoryLost],
    done: Callable[[], Awaitable[bool]],
    timeout: float = 20.0,
) -> None:
    deadline = time.monotonic() + timeout
    while not await done():
        assert time.monotonic() < deadline, f"not caught up; {len(got)} received"
        await asyncio.sleep(0.05)


def offsets_of(got: list[herald.Message | herald.HistoryLost], topic: str) -> list[int]:
    return [m.offset for m in got if isinstance(m, herald.Message) and m.topic == topic]  # type: ignore[misc]


def assert_exact(offsets: list[int], first: int, last: int) -> None:
    """Each offset from ``first`` to ``last`` exactly once, in order."""
    if offsets != list(range(first, last + 1)):
        dups = len(offsets) - len(set(offsets))
        missing = sorted(set(range(first, last + 1)) - set(offsets))
        raise AssertionError(
            f"{len(offsets)} delivered, expected {last - first + 1}: {dups} duplicates, "
            f"{len(missing)} missing (first {missing[:5]})"
        )


async def test_offsets_epoch_and_history(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        policy = await hub.declare(topic, history=3)
        assert policy.history == 3
        acks = [await hub.publish(topic, {"n": i}, confirm=True) for i in range(5)]
        assert [a.offset for a in acks] == [1, 2, 3, 4, 5]
        assert len({a.epoch for a in acks}) == 1
        assert acks[0].epoch
        # Only the last 3 are kept; history() reads them, since= after an offset.
        kept = await hub.history(topic)
        assert [(m.offset, m.data["n"]) for m in kept] == [(3, 2), (4, 3), (5, 4)]
        assert all(m.epoch == acks[0].epoch for m in kept)
        assert [m.offset for m in await hub.history(topic, since=4)] == [5]
        with pytest.raises(herald.ConfigurationError, match="offset"):
            await hub.history(topic, since="1-0")
        # publish_many: one script call, consecutive offsets, one batch frame live
        async with hub.subscribe(topic) as sub:
            await hub.publish_many(topic, list(range(10)))
            got = [await sub.next(2) for _ in range(10)]
        assert [m.offset for m in got] == list(range(6, 16))
        assert [m.data for m in got] == list(range(10))


async def test_declare_refuses_what_cannot_work(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(herald.ConfigurationError, match="durable or recoverable"):
            await hub.declare(topic, durable=True, history=10)
        with pytest.raises(herald.ConfigurationError, match="bare"):
            await hub.declare(topic, bare=True, history=10)
        with pytest.raises(herald.ConfigurationError, match="history"):
            await hub.declare(topic, history=-1)
        with pytest.raises(herald.ConfigurationError, match="history_ttl"):
            await hub.declare(topic, history_ttl=5)
        with pytest.raises(herald.ConfigurationError, match="one recoverable topic"):
            hub.subscribe(f"{topic}.*", since=3)
        with pytest.raises(herald.ConfigurationError, match="not both"):
            hub.subscribe(topic, since=3, last=2)
        await hub.declare(topic, history=10)
        with pytest.raises(herald.ConfigurationError, match="recoverable"):
            await hub.request(topic, "x", timeout=0.5)


async def test_start_positions(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, history=100)
        for i in range(10):
            await hub.publish(topic, i, confirm=True)
        async with hub.subscribe(topic, since=7) as sub:
            assert [(await sub.next(2)).offset for _ in range(3)] == [8, 9, 10]
            await hub.publish(topic, 10)
            assert (await sub.next(2)).offset == 11
        async with hub.subscribe(topic, last=2) as sub:
            assert [(await sub.next(2)).data for _ in range(2)] == [9, 10]
        async with hub.subscribe(topic) as sub:  # the end: only what comes next
            await hub.publish(topic, "next")
            msg = await sub.next(2)
            assert (msg.offset, msg.data) == (12, "next")
        # since= with the wrong epoch: the history it refers to is gone.
        epoch = msg.epoch
        assert epoch is not None
        async with hub.subscribe(topic, since=5, epoch=epoch + 1) as sub:
            with pytest.raises(herald.HistoryLost) as lost:
                await sub.next(2)
            assert (lost.value.topic, lost.value.last_offset) == (topic, 5)
            assert "epoch" in lost.value.reason
            assert (await sub.next(2)).offset == 1  # the whole (new) history follows
        # since= beyond the first kept offset: reported, then what is left
        await hub.declare(topic, history=3, update=True)
        await hub.publish(topic, "trim", confirm=True)  # keeps 11, 12, 13
        async with hub.subscribe(topic, since=2) as sub:
            with pytest.raises(herald.HistoryLost) as lost:
                await sub.next(2)
            assert (lost.value.last_offset, lost.value.first_available) == (2, 11)
            assert [(await sub.next(2)).offset for _ in range(3)] == [11, 12, 13]
            assert sub.stats.history_lost == 1


async def _cut_repeatedly(
    url: str,
    topics: list[str],
    names: list[str],
    cut: Callable[[herald.AsyncClient], Awaitable[None]],
    rounds: int,
    **sub_options: Any,
) -> tuple[list[herald.Message | herald.HistoryLost], herald.Subscription]:
    async with (
        herald.AsyncClient(url) as pub,
        herald.AsyncClient(url, **sub_options) as hub,
    ):
        for t in topics:
            await pub.declare(t, history=100_000)
        got: list[herald.Message | herald.HistoryLost] = []
        sub = await hub.subscribe(*names)
        reader = asyncio.create_task(_collect(sub, got))
        async with publishing(pub, topics, rate=3000):
            for _ in range(rounds):
                await asyncio.sleep(0.25)
                await cut(pub)
            await asyncio.sleep(0.25)
        tops = {t: await top_offset(pub, t) for t in topics}

        async def caught_up() -> bool:
            return all((o := offsets_of(got, t)) and o[-1] >= tops[t] for t in topics if tops[t])

        await settle(got, caught_up)
        await sub.close()
        await reader
        for t in topics:
            assert_exact(offsets_of(got, t), 1, tops[t])
        assert not [m for m in got if isinstance(m, herald.HistoryLost)]
        assert sum(tops.values()) > 1000
        return got, sub


async def _client_kill(pub: herald.AsyncClient) -> None:
    await pub.execute("CLIENT", "KILL", "TYPE", "pubsub")


async def test_client_kill_repeatedly_loses_nothing(url: str, topic: str) -> None:
    _, sub = await _cut_repeatedly(url, [topic], [topic], _client_kill, rounds=6)
    assert sub.stats.gaps >= 5  # every cut was noticed...
    assert sub.stats.recovered > 0  # ...and caught up from history


async def test_pattern_subscription_recovers_every_topic(url: str, topic: str) -> None:
    topics = [f"{topic}.{i}" for i in range(4)]
    got, sub = await _cut_repeatedly(url, topics, [f"{topic}.*"], _client_kill, rounds=5)
    assert {m.pattern for m in got if isinstance(m, herald.Message)} == {f"{topic}.*"}
    assert sub.stats.recovered > 0


async def test_client_pause_loses_nothing(url: str, topic: str) -> None:
    async def pause(pub: herald.AsyncClient) -> None:
        # Long enough for the subscriber's probe to give up on its connection and reconnect.
        await pub.execute("CLIENT", "PAUSE", 600, "ALL")
        await asyncio.sleep(0.7)

    _, sub = await _cut_repeatedly(
        url, [topic], [topic], pause, rounds=3, probe_interval=0.15, probe_timeout=0.15
    )
    assert sub.stats.gaps >= 1


async def _true(value: bool) -> bool:
    return value


async def test_history_lost_once_while_held_down(server: herald.EmbeddedServer, topic: str) -> None:
    """The subscriber's connection stays down (a proxy) while more than the history is
    published: exactly one HistoryLost, with the right offsets, then the rest in order."""
    url = server.url
    with Proxy(server.port) as proxy:
        async with (
            herald.AsyncClient(url) as pub,
            herald.AsyncClient(proxy.url, probe_interval=0.2) as hub,
        ):
            await pub.declare(topic, history=50)
            got: list[herald.Message | herald.HistoryLost] = []
            sub = await hub.subscribe(topic)
            reader = asyncio.create_task(_collect(sub, got))
            await pub.publish(topic, "first", confirm=True)  # offset 1
            await settle(got, lambda: _true(len(got) == 1))
            proxy.down()
            await settle(got, lambda: _true(not hub.stats.connected))
            for i in range(200):  # 2..201, one stored entry each; 152..201 kept
                await pub.publish(topic, i, confirm=True)
            await pub.flush()
            proxy.up()
            await settle(got, lambda: _true(offsets_of(got, topic)[-1:] == [201]))
            await sub.close()
            await reader
            reports = [m for m in got if isinstance(m, herald.HistoryLost)]
            assert len(reports) == 1
            assert (reports[0].last_offset, reports[0].first_available) == (1, 152)
            assert got[1] is reports[0]  # in sequence: after offset 1, before 152
            assert offsets_of(got, topic) == [1, *range(152, 202)]
            assert (sub.stats.history_lost, sub.stats.recovered) == (1, 50)
            assert (hub.stats.history_lost, hub.stats.recovered) == (1, 50)


async def test_restart_with_aof_recovers_everything(
    own_server: herald.EmbeddedServer, topic: str
) -> None:
    async with (
        herald.AsyncClient(own_server.url) as pub,
        herald.AsyncClient(own_server.url, probe_interval=0.2) as hub,
    ):
        await pub.declare(topic, history=10_000)
        got: list[herald.Message | herald.HistoryLost] = []
        sub = await hub.subscribe(topic)
        reader = asyncio.create_task(_collect(sub, got))
        for i in range(100):
            await pub.publish(topic, i, confirm=True)
        await settle(got, lambda: _true(len(got) == 100))
        epoch = got[0].epoch
        await asyncio.to_thread(own_server.stop)  # SIGTERM: the AOF is complete
        await asyncio.to_thread(own_server.start)
        for i in range(100, 200):  # waits for the reconnect
            await pub.publish(topic, i, confirm=True)
        await settle(got, lambda: _true(offsets_of(got, topic)[-1:] == [200]))
        await sub.close()
        await reader
        assert_exact(offsets_of(got, topic), 1, 200)
        assert {m.epoch for m in got if isinstance(m, herald.Message)} == {epoch}
        assert [m.data for m in got if isinstance(m, herald.Message)] == list(range(200))


async def test_restart_without_persistence_reports_a_new_epoch(tmp_path: Path, topic: str) -> None:
    server = herald.EmbeddedServer(tmp_path / "valkey", persist=False)
    server.start()
    try:
        async with (
            herald.AsyncClient(server.url) as pub,
            herald.AsyncClient(server.url, probe_interval=0.2) as hub,
        ):
            await pub.declare(topic, history=1000)
            got: list[herald.Message | herald.HistoryLost] = []
            sub = await hub.subscribe(topic)
            reader = asyncio.create_task(_collect(sub, got))
            for i in range(10):
                await pub.publish(topic, i, confirm=True)
            await settle(got, lambda: _true(len(got) == 10))
            old_epoch = got[0].epoch
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)  # empty: no policy, no history, no epoch
            await pub.declare(topic, history=1000)
            await asyncio.sleep(0.5)  # the subscriber is back
            for i in range(10, 15):
                await pub.publish(topic, i, confirm=True)
            await settle(got, lambda: _true(offsets_of(got, topic)[-1:] == [5]))
            await sub.close()
            await reader
            reports = [m for m in got if isinstance(m, herald.HistoryLost)]
            assert len(reports) == 1, reports
            assert reports[0].last_offset == 10
            assert "reset" in reports[0].reason
            new = [m for m in got[11:] if isinstance(m, herald.Message)]
            assert [m.offset for m in new] == [1, 2, 3, 4, 5]
            assert [m.data for m in new] == list(range(10, 15))
            assert {m.epoch for m in new} != {old_epoch}
    finally:
        server.cleanup()


def test_sync_client_resumes_from_an_offset(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.declare(topic, history=10)
        for i in range(5):
            hub.publish(topic, i)
        hub.flush()
        with hub.subscribe(topic, since=3) as sub:
            assert [sub.next(2).data for _ in range(2)] == [3, 4]
            hub.publish(topic, 5)
            msg = sub.next(2)
            assert (msg.offset, msg.data) == (6, 5)
        assert [m.offset for m in hub.history(topic, since=4)] == [5, 6]


def test_cli_declare_history_sub_since_and_history(url: str, topic: str) -> None:
    from test_cli_durable import ok, run

    out = ok("topics", "declare", topic, "--history", "5", "--history-ttl", "1h", url=url)
    assert "recoverable, history=5, history_ttl=1h" in out
    for i in range(7):
        ok("pub", topic, f'{{"n": {i}}}', "--json", "--confirm", url=url)
    lines = ok("history", topic, "--json", url=url).splitlines()
    assert [json.loads(line)["offset"] for line in lines] == [3, 4, 5, 6, 7]
    lines = ok("history", topic, "--since", "5", "--json", url=url).splitlines()
    assert [json.loads(line)["data"]["n"] for line in lines] == [5, 6]
    assert run("history", topic, "--since", "x", url=url).returncode == 2
    # sub --since catches up from history; --last N the last N
    got = ok("sub", topic, "--since", "5", "--count", "2", "--json", "--timeout", "10", url=url)
    assert [json.loads(line)["offset"] for line in got.splitlines()] == [6, 7]
    got = ok("sub", topic, "--last", "1", "--count", "1", "--json", "--timeout", "10", url=url)
    assert [json.loads(line)["data"]["n"] for line in got.splitlines()] == [6]
    # history no longer reaches back: reported on stderr, then what is left
    proc = run("sub", topic, "--since", "1", "--count", "5", "--json", "-t", "10", url=url)
    assert proc.returncode == 0, proc.stderr
    (report,) = [json.loads(line) for line in proc.stderr.splitlines() if "history_lost" in line]
    assert report["history_lost"]["first_available"] == 3
    assert [json.loads(line)["offset"] for line in proc.stdout.splitlines()] == [3, 4, 5, 6, 7]


async def test_script_flush_costs_one_counted_publish_then_heals(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, history=10)
        async with hub.subscribe(topic) as sub:
            await hub.publish(topic, "a")
            assert (await sub.next(2)).offset == 1
            await hub.execute("SCRIPT", "FLUSH")
            await hub.publish(topic, "lost")  # NOSCRIPT: not published, counted
            await hub.flush()
            assert hub.stats.publish_errors == 1
            await hub.publish(topic, "b")  # loads the script again
            msg = await sub.next(2)
            assert (msg.offset, msg.data) == (2, "b")


async def test_start_from_an_offset_while_publishing_leaves_no_window(url: str, topic: str) -> None:
    """Catch-up from history and the live stream meet without a gap or a duplicate while a
    publisher keeps going, for each way to start."""
    async with herald.AsyncClient(url) as pub, herald.AsyncClient(url) as hub:
        await pub.declare(topic, history=100_000)
        async with publishing(pub, [topic], rate=5000):
            await asyncio.sleep(0.3)
            starts: list[tuple[dict[str, Any], Got]] = [
                ({"since": 0}, []),
                ({"last": 500}, []),
                ({}, []),
            ]
            subs = [await hub.subscribe(topic, **opts) for opts, _ in starts]
            readers = [
                asyncio.create_task(_collect(s, got))
                for s, (_, got) in zip(subs, starts, strict=True)
            ]
            await asyncio.sleep(0.5)
        top = await top_offset(pub, topic)
        for s, reader, (opts, got) in zip(subs, readers, starts, strict=True):

            async def done(got: Got = got) -> bool:
                return offsets_of(got, topic)[-1:] == [top]

            await settle(got, done)
            await s.close()
            await reader
            offsets = offsets_of(got, topic)
            first = offsets[0]
            assert_exact(offsets, first, top)
            if "since" in opts:
                assert first == 1
            elif "last" in opts:
                assert top - first > 500  # started 500 back from the top at its subscribe
            assert not [m for m in got if isinstance(m, herald.HistoryLost)], opts


async def test_a_batch_is_stored_whole_and_recovered_within_max_pending(
    url: str, topic: str
) -> None:
    """publish_many stores one entry per script call: history=N keeps every entry holding one of
    the last N offsets (so here all 300), and a catch-up larger than max_pending waits for the
    reader instead of dropping."""
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, history=10)
        await hub.publish_many(topic, list(range(300)))  # one call: offsets 1..300, one entry
        await hub.flush()
        assert [m.offset for m in await hub.history(topic, since=290)] == list(range(291, 301))
        assert len(await hub.history(topic, limit=1000)) == 300
        async with hub.subscribe(topic, since=0, max_pending=25) as sub:
            got = [await sub.next(2) for _ in range(300)]
            assert [m.offset for m in got] == list(range(1, 301))
            assert sub.stats.dropped == 0
            assert sub.stats.recovered == 300
        # The next single publishes trim the batch away once it no longer holds a kept offset.
        for i in range(10):
            await hub.publish(topic, i, confirm=True)
        assert [m.offset for m in await hub.history(topic)] == list(range(301, 311))


async def test_history_lost_once_while_the_history_is_trimmed_fast(
    server: herald.EmbeddedServer, topic: str
) -> None:
    """The connection is held down past a short history while publishes go on at full rate:
    every history read after the resubscribe finds the front trimmed again. Still exactly one
    HistoryLost per break, bounded by the offsets delivered around it, and nothing after it
    missing or repeated (reading again after each report used to find a new loss forever)."""
    with Proxy(server.port) as proxy:
        async with (
            herald.AsyncClient(server.url) as pub,
            herald.AsyncClient(proxy.url, probe_interval=0.2) as hub,
        ):
            await pub.declare(topic, history=20)
            got: Got = []
            sub = await hub.subscribe(topic, max_pending=1_000_000)
            reader = asyncio.create_task(_collect(sub, got))
            async with publishing(pub, [topic], rate=4000) as count:
                await settle(got, lambda: _true(len(got) > 100))
                for breaks in (1, 2):
                    proxy.down()
                    await settle(got, lambda: _true(not hub.stats.connected))
                    await asyncio.sleep(0.5)
                    proxy.up()
                    await settle(got, lambda: _true(hub.stats.connected))
                    # Two breaks only if something was delivered between them: on a slow
                    # machine the next outage could start before the first report's page.
                    await settle(got, partial(_reported_then_delivered, got, breaks))
                    await asyncio.sleep(0.5)
            top = await top_offset(pub, topic)
            await settle(got, lambda: _true(offsets_of(got, topic)[-1:] == [top]))
            await sub.close()
            await reader
    assert count[0] == top
    reports = [(i, m) for i, m in enumerate(got) if isinstance(m, herald.HistoryLost)]
    assert len(reports) == 2, [(r.last_offset, r.first_available) for _, r in reports]
    for i, lost in reports:
        before, after = got[i - 1], got[i + 1]
        assert isinstance(before, herald.Message)
        assert isinstance(after, herald.Message)
        assert (lost.last_offset, lost.first_available) == (before.offset, after.offset)
    offsets = offsets_of(got, topic)
    first = offsets[0]
    expected = list(range(first, top + 1))
    for _, lost in reports:
        assert lost.first_available is not None
        expected = [o for o in expected if not lost.last_offset < o < lost.first_available]
    assert offsets == expected


async def _reported_then_delivered(got: Got, reports: int) -> bool:
    """``reports`` HistoryLost received, and a message after the last of them."""
    lost = [i for i, m in enumerate(got) if isinstance(m, herald.HistoryLost)]
    return len(lost) >= reports and len(got) > lost[-1] + 1 if lost else False


async def _evalsha_calls(hub: herald.AsyncClient) -> int:
    info = await hub.execute("INFO", "commandstats")
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_out_of_sequence_frames_cost_one_read_and_no_memory(
    server: herald.EmbeddedServer, topic: str
) -> None:
    """Frames that did not come from the topic's publish script, sent with a raw PUBLISH: an
    offset far ahead, the next offset in another epoch, and a batch frame of 16,000
    messages without offsets. None is delivered (all counted in ``stats.rejected``), no
    HistoryLost, at most a history read or two each (it used to read again forever, holding
    every later live message), and the real messages before and after come through whole."""
    enc = Encoder("json")
    async with (
        herald.AsyncClient(server.url) as pub,
        herald.AsyncClient(server.url) as hub,
    ):
        await pub.declare(topic, history=100)
        await asyncio.sleep(0.01)
        got: Got = []
        sub = await hub.subscribe(topic)
        reader = asyncio.create_task(_collect(sub, got))
        for i in range(5):
            await pub.publish(topic, i, confirm=True)
        await settle(got, lambda: _true(len(got) == 5))
        first = got[0]
        assert isinstance(first, herald.Message)
        assert first.epoch is not None
        reads_before = await _evalsha_calls(pub)
        far_ahead = enc.envelope("forged", offset=1_000_000, epoch=first.epoch)
        other_epoch = enc.envelope("forged", offset=6, epoch=first.epoch + 1)
        no_offsets = batch([enc.envelope(i % 10) for i in range(16_000)])
        for frame in (far_ahead, other_epoch, no_offsets):
            await pub.execute("PUBLISH", topic, frame)
        await asyncio.sleep(1.0)  # no traffic: a loop would read the history all along
        reads = await _evalsha_calls(pub) - reads_before
        track = sub._recovery.tracks[topic] if sub._recovery else None
        assert track is not None
        assert (track.held, track.recovering) == ([], False)
        for i in range(50):
            await pub.publish(topic, 5 + i, confirm=True)
        await settle(got, lambda: _true(offsets_of(got, topic)[-1:] == [55]))
        await sub.close()
        await reader
    assert reads <= 4, reads
    assert offsets_of(got, topic) == list(range(1, 56))
    assert [m.data for m in got if isinstance(m, herald.Message)] == list(range(55))
    assert (sub.stats.rejected, sub.stats.history_lost) == (16_002, 0)


async def test_a_topic_declared_without_history_is_live_again_for_its_subscribers(
    url: str, topic: str
) -> None:
    # A subscription that sequenced the topic while it kept a history: once the history is
    # declared away, its messages carry no offset and are delivered live, not rejected as
    # frames that did not come from the publish script.
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, history=10)
        async with hub.subscribe(topic) as sub:
            await hub.publish(topic, 1, confirm=True)
            assert (await sub.next(timeout=5)).offset == 1
            await hub.declare(topic, history=0, update=True)
            await hub.publish(topic, 2, confirm=True)
            msg = await sub.next(timeout=5)
            assert (msg.data, msg.offset) == (2, None)
            assert sub.stats.rejected == 0
