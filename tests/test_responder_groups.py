"""Responder groups: each request handled by one member of a group, spread over the members;
a member killed mid-request; scatter/gather across groups and plain responders; Cluster."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from typing import Any

import pytest

import herald
from herald import Message
from herald._pubsub.responders import CONSUMER_GROUP, queue_key
from herald.testing import LocalCluster, LocalSentinel

_ids = itertools.count()


def topic_name() -> str:
    return f"rg.{next(_ids)}"


async def test_each_request_handled_once_spread_over_members(url: str) -> None:
    topic = topic_name()
    handled: Counter[tuple[int, int]] = Counter()  # (member, request) -> times

    def worker(member: int) -> Any:
        async def handle(msg: Message) -> Any:
            handled[(member, msg.data)] += 1
            await asyncio.sleep(0.01)
            return {"member": member, "n": msg.data}

        return handle

    members = [herald.AsyncClient(url) for _ in range(3)]
    async with herald.AsyncClient(url) as requester:
        responders = [
            await hub.respond(topic, worker(i), group="workers") for i, hub in enumerate(members)
        ]
        replies = await asyncio.gather(
            *(requester.request(topic, n, timeout=10) for n in range(60))
        )
        assert [r.data["n"] for r in replies] == list(range(60))
        per_request = Counter(n for (_, n) in handled.elements())
        assert per_request == Counter(range(60))  # each exactly once
        per_member = Counter(m for (m, _) in handled.elements())
        assert set(per_member) == {0, 1, 2}, per_member  # every member took some
        assert sum(r.handled for r in responders) == 60
        for r in responders:
            await r.close()
    for hub in members:
        await hub.close()


async def test_request_many_gathers_groups_and_plain_responders(url: str) -> None:
    topic = topic_name()
    async with herald.AsyncClient(url) as a, herald.AsyncClient(url) as b:
        await a.respond(topic, lambda msg: "group-a", group="a")
        await b.respond(topic, lambda msg: "group-a", group="a")
        await b.respond(topic, lambda msg: "group-b", group="b")
        await a.subscribe(topic, handler=lambda msg: "plain")
        async with herald.AsyncClient(url) as requester:
            started = asyncio.get_running_loop().time()
            replies = await requester.request_many(topic, None, timeout=5)
            # PUBLISH counted one receiver, plus one per group: returned without the timeout
            assert asyncio.get_running_loop().time() - started < 2
            assert sorted(r.data for r in replies) == ["group-a", "group-b", "plain"]


async def test_no_responders_once_the_group_is_gone(url: str) -> None:
    topic = topic_name()
    async with herald.AsyncClient(url) as hub:
        member = await hub.respond(topic, lambda msg: 1, group="g")
        async with herald.AsyncClient(url) as requester:
            assert (await requester.request(topic, None)).data == 1
        await member.close()
        async with herald.AsyncClient(url) as requester:
            with pytest.raises(herald.NoResponders):
                await requester.request(topic, None)
    async with herald.AsyncClient(url) as hub:  # closing the client closes its members
        await hub.respond(topic, lambda msg: 1, group="g")
    async with herald.AsyncClient(url) as requester:
        with pytest.raises(herald.NoResponders):
            await requester.request(topic, None)


async def test_handler_error_and_typed_payload(url: str) -> None:
    topic = topic_name()

    def fail(msg: Message) -> Any:
        raise ValueError("no")

    async with herald.AsyncClient(url) as hub, hub.respond(topic, fail, group="g"):
        with pytest.raises(herald.ResponderFailed, match="ValueError"):
            await hub.request(topic, None, timeout=5)


MEMBER = textwrap.dedent(
    """
    import sys, time, herald

    def handle(msg):
        print("took", msg.data, flush=True)
        time.sleep(60)  # killed meanwhile

    with herald.Client(sys.argv[1]) as hub:
        with hub.respond(sys.argv[2], handle, group="g", redeliver_after=1.0):
            print("ready", flush=True)
            time.sleep(120)
    """
)


def start_member(url: str, topic: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", MEMBER, url, topic], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


async def test_member_killed_mid_request_is_redelivered(url: str) -> None:
    topic = topic_name()
    proc = start_member(url, topic)
    try:
        async with herald.AsyncClient(url) as requester:
            pending = asyncio.create_task(requester.request(topic, 7, timeout=10))
            assert proc.stdout is not None
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line.strip() == "took 7"
            proc.kill()  # dies with the request in hand
            proc.wait()
            async with herald.AsyncClient(url) as survivor:
                member = await survivor.respond(
                    topic, lambda msg: msg.data * 2, group="g", redeliver_after=1.0
                )
                reply = await pending
                assert reply.data == 14
                assert member.redelivered == 1
    finally:
        stop(proc)


async def test_a_dead_members_request_behind_ten_held_ones_is_redelivered(url: str) -> None:
    """XAUTOCLAIM looks at 10 pending entries per COUNT: a member's reclaim follows its cursor
    past entries other members hold (kept fresh), to the dead member's one behind them."""
    topic = topic_name()
    release = asyncio.Event()

    taken = 0
    all_taken = asyncio.Event()

    async def slow(msg: herald.Message) -> int:
        nonlocal taken
        taken += 1
        if taken == 10:
            all_taken.set()
        await release.wait()
        return 0

    async with herald.AsyncClient(url) as a_hub, herald.AsyncClient(url) as requester:
        await a_hub.respond(topic, slow, group="g", concurrency=10, redeliver_after=1.0)
        held = [asyncio.create_task(requester.request(topic, i, timeout=30)) for i in range(10)]
        await asyncio.wait_for(all_taken.wait(), 10)
        lost = asyncio.create_task(requester.request(topic, 7, timeout=8))
        got = None
        while not got:  # a member that takes it, then dies
            got = await requester.execute(
                "XREADGROUP", "GROUP", CONSUMER_GROUP, "ghost", "COUNT", 1,
                "STREAMS", queue_key(topic, "g"), ">",
            )  # fmt: skip
        async with herald.AsyncClient(url) as b_hub:
            await b_hub.respond(topic, lambda m: m.data * 2, group="g", redeliver_after=1.0)
            try:
                assert (await lost).data == 14
            finally:
                release.set()
                await asyncio.gather(*held, return_exceptions=True)


async def test_member_killed_after_the_deadline_gives_timeout(url: str) -> None:
    topic = topic_name()
    proc = start_member(url, topic)
    try:
        async with herald.AsyncClient(url) as requester:
            pending = asyncio.create_task(requester.request(topic, 7, timeout=0.5))
            assert proc.stdout is not None
            assert (await asyncio.to_thread(proc.stdout.readline)).strip() == "took 7"
            proc.kill()
            proc.wait()
            with pytest.raises(herald.Timeout):
                await pending
            async with herald.AsyncClient(url) as survivor:
                calls: list[int] = []
                member = await survivor.respond(
                    topic, lambda msg: calls.append(1), group="g", redeliver_after=0.5
                )
                for _ in range(40):
                    if member.expired:
                        break
                    await asyncio.sleep(0.1)
                assert member.expired == 1
                assert calls == []  # the requester had given up: not handled again
    finally:
        stop(proc)


async def test_member_closed_mid_request_hands_it_over(url: str) -> None:
    topic = topic_name()
    took = asyncio.Event()

    async def slow(msg: Message) -> Any:
        took.set()
        await asyncio.sleep(30)

    async with herald.AsyncClient(url) as a, herald.AsyncClient(url) as b:
        leaving = await a.respond(topic, slow, group="g", redeliver_after=1.0)
        pending = asyncio.create_task(a.request(topic, 5, timeout=10))
        await asyncio.wait_for(took.wait(), 5)
        await leaving.close(grace=0.1)  # its handler is cancelled, the request not acked
        staying = await b.respond(topic, lambda msg: msg.data + 1, group="g", redeliver_after=1.0)
        assert (await pending).data == 6
        assert staying.redelivered == 1


def test_threaded_client(url: str) -> None:
    topic = topic_name()
    threads: set[str] = set()

    def handle(msg: Message) -> Any:
        threads.add(threading.current_thread().name)
        return msg.data + 1

    with herald.Client(url) as hub, hub.respond(topic, handle, group="g", concurrency=2) as r:
        assert hub.request(topic, 1, timeout=5).data == 2
        assert r.handled == 1
    assert "herald-io" not in threads


def test_bad_group_name(url: str) -> None:
    with herald.Client(url) as hub:
        with pytest.raises(herald.ConfigurationError):
            hub.respond("t", print, group="a b")
        with pytest.raises(herald.ConfigurationError):
            hub.respond("t", print, group="{x}")
        with pytest.raises(herald.ReservedName):
            hub.respond("_herald.inbox.x", print, group="g")


async def test_cluster(cluster: LocalCluster) -> None:
    topics = [topic_name() for _ in range(4)]  # over several slots
    async with herald.AsyncClient(cluster.url) as a, herald.AsyncClient(cluster.url) as b:
        for t in topics:
            await a.respond(t, lambda msg: "a", group="g")
            await b.respond(t, lambda msg: "b", group="g")
        async with herald.AsyncClient(cluster.url) as requester:
            replies = await asyncio.gather(
                *(requester.request(t, None, timeout=10) for t in topics for _ in range(10))
            )
            assert len(replies) == 40
            assert {r.data for r in replies} == {"a", "b"}


async def test_sentinel(sentinel: LocalSentinel) -> None:
    topic = topic_name()
    async with herald.AsyncClient(sentinel.url) as a, herald.AsyncClient(sentinel.url) as b:
        await a.respond(topic, lambda msg: "a", group="g")
        await b.respond(topic, lambda msg: "b", group="g")
        replies = await asyncio.gather(*(a.request(topic, None, timeout=10) for _ in range(20)))
        assert {r.data for r in replies} <= {"a", "b"}
        assert len(replies) == 20
