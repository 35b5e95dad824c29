"""Durable topics read back: history, replay by offset and time, new groups at a point in time,
positions trimmed away, topic_info, dead letters and their replay."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import pytest

import herald
from conftest import TrimBelow
from herald import ConfigurationError, PositionTrimmed, StoredMessage
from herald._core.offsets import end_bound, group_start, previous_id, start_bound
from herald._core.streams import stream_key


async def publish_spread(hub: herald.AsyncClient, topic: str, n: int) -> list[str]:
    """n messages (data = 0..n-1), each in a millisecond of its own: times tell them apart."""
    offsets = []
    for i in range(n):
        ack = await hub.publish(topic, i, confirm=True)
        assert isinstance(ack.offset, str)
        offsets.append(ack.offset)
        await asyncio.sleep(0.003)
    return offsets


def ms(offset: str) -> int:
    return int(offset.split("-")[0])


# -- positions (sans-I/O) --------------------------------------------------------------------


def test_bounds_of_ids_and_times() -> None:
    assert start_bound(None) == "-"
    assert start_bound("17-3") == "(17-3"  # after an entry
    assert start_bound("17") == "(17-0"
    assert start_bound(1.5) == "1500-0"  # at or after a time
    assert start_bound(datetime(1970, 1, 1, 0, 0, 2, tzinfo=UTC)) == "2000-0"
    assert end_bound(None) == "+"
    assert end_bound("17-3") == "17-3"  # up to an entry, included
    assert end_bound(2) == "2000-18446744073709551615"
    assert group_start("new") == "$"
    assert group_start("all") == "0"
    assert group_start("17") == "17-0"
    assert group_start(2.0) == "1999-18446744073709551615"  # the group starts *at* 2 s
    assert group_start(0) == "0"
    assert previous_id("17-0") == "16-18446744073709551615"
    for bad in ("yesterday", "1-2-3", "-1", "", "1-"):
        with pytest.raises(ConfigurationError):
            start_bound(bad)
    with pytest.raises(ConfigurationError, match="invalid start"):
        group_start("yesterday")
    with pytest.raises(ConfigurationError, match=">= 0"):
        start_bound(-1)
    with pytest.raises(ConfigurationError, match="bool"):
        start_bound(True)


# -- history and replay ----------------------------------------------------------------------


async def test_history_pages_by_offset_and_starts_at_a_time(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        offsets = await publish_spread(hub, topic, 10)
        first = await hub.history(topic, limit=4)
        assert [m.data for m in first] == [0, 1, 2, 3]
        assert all(isinstance(m, StoredMessage) and not hasattr(m, "ack") for m in first)
        assert [m.offset for m in first] == offsets[:4]
        assert first[0].id
        assert (first[0].topic, first[0].key) == (topic, None)
        assert first[0].stored_at == ms(offsets[0]) / 1000
        # since an offset: the entries after it, so the last offset of a page reads on
        second = await hub.history(topic, since=first[-1].offset, limit=4)
        assert [m.data for m in second] == [4, 5, 6, 7]
        # since a time: entries stored at or after it (epoch seconds or a datetime)
        t = ms(offsets[6]) / 1000
        assert [m.data for m in await hub.history(topic, since=t)] == [6, 7, 8, 9]
        when = datetime.fromtimestamp(t, UTC)
        assert [m.data for m in await hub.history(topic, since=when, limit=2)] == [6, 7]
        assert await hub.history(topic, since=offsets[-1]) == []
        # reading moved no group and acked nothing
        assert await hub.execute("XINFO", "GROUPS", stream_key(topic)) == []


async def test_replay_between_offsets_and_times(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        offsets = await publish_spread(hub, topic, 25)
        everything = [m.data async for m in hub.replay(topic, page=7)]  # pages of 7: 4 reads
        assert everything == list(range(25))
        part = [m.data async for m in hub.replay(topic, since=offsets[4], until=offsets[9])]
        assert part == [5, 6, 7, 8, 9]  # after since, up to until included
        t0, t1 = ms(offsets[10]) / 1000, ms(offsets[12]) / 1000
        assert [m.data async for m in hub.replay(topic, since=t0, until=t1, page=1)] == [10, 11, 12]


def test_sync_client_history_and_replay(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        for i in range(12):
            hub.publish(topic, i, key=f"k{i % 2}")
        assert [m.data for m in hub.history(topic, limit=3)] == [0, 1, 2]
        replayed = list(hub.replay(topic, page=5))
        assert [m.data for m in replayed] == list(range(12))
        assert [m.key for m in replayed[:3]] == ["k0", "k1", "k0"]


async def test_reading_a_live_topic_is_refused(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(ConfigurationError, match="not durable"):
            await hub.history(topic)
        with pytest.raises(ConfigurationError, match="not durable"):
            [m async for m in hub.replay(topic)]
        await hub.declare(topic, durable=True)
        with pytest.raises(ConfigurationError, match="entry id"):
            await hub.history(topic, since="yesterday")


async def test_a_new_group_starts_at_a_point_in_time(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        offsets = await publish_spread(hub, topic, 8)
        at = ms(offsets[5]) / 1000
        async with hub.consume(topic, "from-time", start=at) as c:
            assert [(await c.next(5)).data for _ in range(3)] == [5, 6, 7]  # at, not after
        when = datetime.fromtimestamp(ms(offsets[2]) / 1000, UTC)
        async with hub.consume(topic, "from-datetime", start=when) as c:
            assert (await c.next(5)).data == 2
        async with hub.consume(topic, "from-offset", start=offsets[6]) as c:
            assert (await c.next(5)).data == 7  # after the entry


# -- a position trimmed away -----------------------------------------------------------------


async def _lose_entries(hub: herald.AsyncClient, topic: str, group: str) -> list[str]:
    """A group that read (and acked) 3 of 30 entries, and a trim that keeps the last 5."""
    await hub.declare(topic, durable=True, max_len=5, trim_unacked=True)
    offsets = [str((await hub.publish(topic, i, confirm=True)).offset or "") for i in range(30)]
    stream = stream_key(topic)
    await hub.execute("XGROUP", "CREATE", stream, group, "0")
    await hub.execute("XREADGROUP", "GROUP", group, "reader", "COUNT", 3, "STREAMS", stream, ">")
    await hub.execute("XACK", stream, group, *offsets[:3])
    assert await hub.trim(topic) == 25
    return offsets


async def test_a_trimmed_position_raises_by_default(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        offsets = await _lose_entries(hub, topic, "g")
        c = await hub.consume(topic, "g", "reader")
        with pytest.raises(PositionTrimmed) as info:
            await c.next(5)
        err = info.value
        assert (err.topic, err.group, err.lost) == (topic, "g", 22)  # entries 3..24
        assert err.position == offsets[2]
        assert err.first_available == offsets[25]
        assert c.closed
        assert c.error is err
        assert c.stats.trimmed == 22
        # Reported once: the read that found it moved the group on (and the entries it read
        # were handed back at once), so a consumer started now reads on.
        async with hub.consume(topic, "g", "reader") as again:
            assert [(await again.next(5)).data for _ in range(5)] == [25, 26, 27, 28, 29]
            assert again.stats.trimmed == 0


async def test_a_trimmed_position_with_continue_reads_on(
    url: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with herald.AsyncClient(url) as hub:
        await _lose_entries(hub, topic, "g")
        with caplog.at_level(logging.WARNING, logger="herald"):
            async with hub.consume(topic, "g", on_trimmed="continue") as c:
                assert [(await c.next(5)).data for _ in range(5)] == [25, 26, 27, 28, 29]
        assert c.stats.trimmed == 22
        assert "22 entries after its position" in caplog.text


async def test_an_xtrim_by_someone_else_is_found_too(
    url: str, topic: str, trim_below_group: TrimBelow
) -> None:
    async with herald.AsyncClient(url) as hub:
        await trim_below_group(hub, topic)
        c = await hub.consume(topic, "g")
        with pytest.raises(PositionTrimmed, match="6 entries"):
            await c.next(5)


async def test_safe_retention_and_late_groups_are_not_reported(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True, max_len=5)
        async with hub.consume(topic, "keeps-up", start="all") as c:
            for i in range(40):
                await hub.publish(topic, i, confirm=True)
                msg = await c.next(5)
                assert msg.data == i
                await msg.ack(confirm=True)
                if i % 10 == 9:
                    await hub.trim(topic)  # trims what the group acked: no loss
            assert c.stats.trimmed == 0
        assert await hub.execute("XLEN", stream_key(topic)) <= 10
        # A group created after trimming starts at the first entry left: nothing lost to it.
        async with hub.consume(topic, "late", start="all") as late:
            first = await late.next(5)
            assert first.data >= 30
            assert late.stats.trimmed == 0
            assert not late.closed


# -- introspection and dead letters ----------------------------------------------------------


async def test_topic_info(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        info = await hub.topic_info(topic)  # nothing declared, nothing stored
        assert (info.policy, info.length, info.groups, info.first_offset) == (None, 0, (), None)
        await hub.declare(topic, durable=True, max_len=100)
        offsets = [(await hub.publish(topic, i, confirm=True)).offset for i in range(6)]
        async with hub.consume(
            topic, "g", "w1", start="all", auto_ack=False, batch=4, max_ack_pending=4
        ) as c:
            got = [await c.next(5) for _ in range(4)]
            info = await hub.topic_info(topic)
            await got[0].term("bad")
        assert info.policy == herald.TopicPolicy(durable=True, max_len=100)
        assert info.length == 6
        assert (info.first_offset, info.last_offset) == (offsets[0], offsets[-1])
        assert info.first_time == int(str(offsets[0]).split("-")[0]) / 1000
        (group,) = info.groups
        assert (group.name, group.pending, group.last_delivered) == ("g", 4, offsets[3])
        assert group.lag == 2
        assert [(x.name, x.pending) for x in group.consumers] == [("w1", 4)]
        assert info.pending == 4
        assert info.dead_letters == 0
        assert (await hub.topic_info(topic)).dead_letters == 1


async def test_dead_letters_list_and_replay(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        for i in range(4):
            await hub.publish(topic, {"n": i}, key=f"k{i}", headers={"trace": str(i)})
        async with hub.consume(topic, "g", "w", start="all") as c:
            for _ in range(4):
                msg = await c.next(5)
                if msg.data["n"] % 2:
                    await msg.term(f"odd {msg.data['n']}")
                else:
                    await msg.ack()
        dead = await hub.dead_letters(topic)
        assert [(d.reason, d.deliveries, d.group, d.consumer) for d in dead] == [
            ("odd 1", 1, "g", "w"),
            ("odd 3", 1, "g", "w"),
        ]
        assert dead[0].topic == topic
        assert dead[0].message.data == {"n": 1}
        assert dead[0].message.key == "k1"
        assert dead[0].time == pytest.approx(time.time(), abs=30)
        assert len(await hub.dead_letters(topic, since=dead[0].offset)) == 1
        before = await hub.execute("XLEN", stream_key(topic))

        async with hub.consume(topic, "g", "w") as c, hub.subscribe(topic) as live:
            done = await hub.replay_dead(topic, [dead[0].offset])
            assert list(done) == [dead[0].offset]
            again = await c.next(5)  # back on the topic, for every group
            assert (again.data, again.key, again.id) == ({"n": 1}, "k1", dead[0].message.id)
            assert again.headers == {"trace": "1"}  # Herald's metadata stays behind
            assert again.offset == done[dead[0].offset]
            assert (await live.next(5)).data == {"n": 1}  # published live too
            # idempotent: gone from the dead letters, so a second replay puts nothing back
            assert await hub.replay_dead(topic, [dead[0].offset]) == {}
            assert await hub.replay_dead(topic) == {dead[1].offset: (await c.next(5)).offset}
        assert await hub.dead_letters(topic) == []
        assert await hub.execute("XLEN", stream_key(topic)) == before + 2


async def test_replay_dead_many_and_concurrently(url: str, topic: str) -> None:
    n = 250  # more than a page
    async with herald.AsyncClient(url) as hub, herald.AsyncClient(url) as other:
        await hub.declare(topic, durable=True)
        dead = stream_key(f"{topic}.dead")
        for i in range(n):
            await hub.execute("XADD", dead, "*", "m", str(i), "herald-reason", "test")
        a, b = await asyncio.gather(hub.replay_dead(topic), other.replay_dead(topic))
        assert len(a) + len(b) == n  # each put back exactly once
        assert not set(a) & set(b)
        assert await hub.execute("XLEN", stream_key(topic)) == n
        assert await hub.execute("XLEN", dead) == 0


async def test_limits_must_be_positive(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        with pytest.raises(ConfigurationError, match="limit"):
            await hub.history(topic, limit=0)
        with pytest.raises(ConfigurationError, match="page"):
            [m async for m in hub.replay(topic, page=0)]
