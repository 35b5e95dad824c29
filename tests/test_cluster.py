"""Herald on a real local Valkey Cluster (``herald.testing.LocalCluster``): sharded live
topics on every shard, patterns across shards, durable topics, slot migration and failover."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

import herald
from conftest import TrimBelow
from herald import AsyncClient, Gap
from herald._core.slots import key_slot
from herald._core.streams import TOPICS_KEY
from herald._io.cluster import PATTERNS_KEY, ClusterLink
from herald.testing import ClusterNode, LocalCluster

_ids = itertools.count()


def topics_on_every_shard(cluster: LocalCluster, prefix: str, per_shard: int) -> list[str]:
    """Topic names, ``per_shard`` on each primary."""
    primaries = cluster.primaries()
    owners: dict[int, list[str]] = {n.port: [] for n in primaries}
    ranges = [(first, last, p.port) for first, last, p, _ in cluster.slot_map()]
    for i in itertools.count():
        name = f"{prefix}{next(_ids)}.{i}"
        slot = key_slot(name)
        port = next(port for first, last, port in ranges if first <= slot <= last)
        if len(owners[port]) < per_shard:
            owners[port].append(name)
        if all(len(v) == per_shard for v in owners.values()):
            return [t for v in owners.values() for t in v]
    raise AssertionError  # pragma: no cover


def topic_on(cluster: LocalCluster, node: ClusterNode, prefix: str) -> str:
    for i in itertools.count():
        name = f"{prefix}{next(_ids)}.{i}"
        if cluster.primary_for(key_slot(name)) is node:
            return name
    raise AssertionError  # pragma: no cover


async def take(sub: herald.Subscription, n: int, timeout: float = 5.0) -> list[herald.Message]:
    out: list[herald.Message] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await sub.next())
    return out


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls a server or counters, not a task
            await asyncio.sleep(0.05)


# -- one shared cluster ------------------------------------------------------------------------


async def test_publish_subscribe_on_every_shard(cluster: LocalCluster) -> None:
    topics = topics_on_every_shard(cluster, "live.", 3)
    async with AsyncClient(cluster.url) as pub, AsyncClient(cluster.url) as sub_client:
        assert isinstance(pub._link, ClusterLink)
        assert len(pub._link.links) == 3
        async with sub_client.subscribe(*topics) as sub:
            for i in range(20):
                for t in topics:
                    await pub.publish(t, {"i": i})
            await pub.publish_many(topics[0], range(100))
            acks = [await pub.publish(t, "c", confirm=True) for t in topics]
            got = await take(sub, 20 * len(topics) + 100 + len(topics))
            assert all(a.receivers == 1 for a in acks)
            counts = Counter(m.topic for m in got)
            assert counts == {t: 21 + (100 if t == topics[0] else 0) for t in topics}
            for t in topics:  # each topic in order
                seq = [m.data["i"] for m in got if m.topic == t and isinstance(m.data, dict)]
                assert seq == list(range(20))
            # Sharded: each channel is subscribed on its own slot's primary only.
            for t in topics:
                owner = cluster.primary_for(key_slot(t))
                assert owner.call("PUBSUB", "SHARDNUMSUB", t)[1] == 1
            with pytest.raises(TimeoutError):
                await sub.next(timeout=0.2)  # nothing twice
        assert pub.stats.publish_errors == 0


async def test_patterns_across_shards(cluster: LocalCluster) -> None:
    topics = topics_on_every_shard(cluster, "pat.", 2)
    async with AsyncClient(cluster.url) as pub, AsyncClient(cluster.url) as sub_client:
        exact = await sub_client.subscribe(topics[0])
        async with sub_client.subscribe("pat.*") as psub:
            for t in topics:
                await pub.publish(t, t)
                await pub.publish(t, t, confirm=True)
            got = await take(psub, 2 * len(topics))
            assert Counter(m.topic for m in got) == dict.fromkeys(topics, 2)
            assert (await take(exact, 2))[0].topic == topics[0]
            with pytest.raises(TimeoutError):
                await exact.next(timeout=0.3)  # the exact subscription got each once
            with pytest.raises(TimeoutError):
                await psub.next(timeout=0.1)
            # A publisher that connects later knows the pattern from its first publish on.
            async with AsyncClient(cluster.url) as late:
                for t in topics:
                    await late.publish(t, "late")
            got = await take(psub, len(topics))
            assert sorted(m.topic for m in got) == sorted(topics)
            assert isinstance(pub._link, ClusterLink)
            assert "pat.*" in pub._link.patterns
        await exact.close()
        # The lease is gone: publishers go back to sharded publishing.
        assert not await pub.execute("HGETALL", PATTERNS_KEY)
        assert isinstance(pub._link, ClusterLink)
        await asyncio.sleep(1.3)
        assert "pat.*" not in pub._link.patterns


async def test_durable_topics_across_shards(cluster: LocalCluster) -> None:
    topics = topics_on_every_shard(cluster, "orders.", 1)
    async with AsyncClient(cluster.url) as hub, AsyncClient(cluster.url) as reader:
        for t in topics:
            await hub.declare(t, durable=True)
        live = await reader.subscribe(*topics)
        for t in topics:
            for i in range(10):
                await hub.publish(t, i)  # confirmed
            await hub.publish(t, 10, msg_id="m10")  # the idempotent script path
            again = await hub.publish(t, 10, msg_id="m10")
            assert again is not None
            assert again.duplicate
            await hub.publish(t, 11, confirm=False)
            await hub.publish_many(t, [12, 13])
        for t in topics:
            n = 0
            async with reader.consume(t, "billing", start="all") as c:
                async for msg in c:
                    assert msg.data == n
                    await msg.ack()
                    n += 1
                    if n == 14:
                        break
            info = await hub.topic_info(t)
            assert info.length == 14
            assert info.groups[0].pending == 0
        got = await take(live, 14 * len(topics))  # the live copies, each once
        assert Counter(m.topic for m in got) == dict.fromkeys(topics, 14)
        with pytest.raises(TimeoutError):
            await live.next(timeout=0.2)
        await live.close()


async def test_a_trimmed_position_is_found_on_every_shard(
    cluster: LocalCluster, trim_below_group: TrimBelow
) -> None:
    # The check goes to the stream's node, ahead of the read, whichever shard serves it.
    async with AsyncClient(cluster.url) as hub:
        for t in topics_on_every_shard(cluster, "trimmed.", 1):
            await trim_below_group(hub, t)
            c = await hub.consume(t, "g")
            with pytest.raises(herald.PositionTrimmed, match="6 entries"):
                await c.next(5)


async def test_recoverable_topics_across_shards(cluster: LocalCluster) -> None:
    topics = topics_on_every_shard(cluster, "hist.", 1)
    async with AsyncClient(cluster.url) as hub, AsyncClient(cluster.url) as reader:
        for t in topics:
            await hub.declare(t, history=100)
            for i in range(5):
                ack = await hub.publish(t, i, confirm=True)
                assert ack.offset == i + 1
        async with reader.subscribe("hist.*", last=2) as sub:
            got = await take(sub, 2 * len(topics))
            assert sorted((m.topic, m.offset) for m in got) == sorted(
                (t, o) for t in topics for o in (4, 5)
            )
            for t in topics:
                await hub.publish(t, 99)
            live = await take(sub, len(topics))
            assert sorted((m.topic, m.offset, m.data) for m in live) == sorted(
                (t, 6, 99) for t in topics
            )
        async with reader.subscribe(topics[0], since=3) as one:
            assert [(m.offset, m.data) for m in await take(one, 3)] == [(4, 3), (5, 4), (6, 99)]
        assert [m.offset for m in await hub.history(topics[1], since=4)] == [5, 6]


def test_sync_client_on_a_cluster(cluster: LocalCluster) -> None:
    topics = topics_on_every_shard(cluster, "sync.", 1)
    with herald.Client(cluster.url) as hub:
        with hub.subscribe(*topics) as sub:
            for t in topics:
                hub.publish(t, t)
            got = [sub.next(timeout=5) for _ in topics]
        assert sorted(m.topic for m in got) == sorted(topics)


async def test_request_reply_on_a_cluster(cluster: LocalCluster) -> None:
    topic = topics_on_every_shard(cluster, "rpc.", 1)[1]
    async with AsyncClient(cluster.url) as server, AsyncClient(cluster.url) as client:
        async with server.subscribe(topic, handler=lambda m: m.data * 2):
            replies = [await client.request(topic, i, timeout=2) for i in range(5)]
        assert [r.data for r in replies] == [0, 2, 4, 6, 8]


async def test_acl_user_without_channel_permission(cluster: LocalCluster) -> None:
    prefix = f"acl{next(_ids)}"
    allowed = topics_on_every_shard(cluster, f"{prefix}.ok.", 1)
    forbidden = topics_on_every_shard(cluster, f"{prefix}.no.", 1)
    # ACLs are per node: the user exists on every node, as an operator would set it up.
    for node in cluster.nodes:
        node.call("ACL", "SETUSER", prefix, "on", ">pw", "~*", f"&{prefix}.ok.*", "+@all")
    url = cluster.url.replace("redis+cluster://", f"redis+cluster://{prefix}:pw@")
    async with AsyncClient(url) as hub:
        for t in forbidden:  # on every shard
            with pytest.raises(herald.PermissionDenied, match="NOPERM"):
                await hub.subscribe(t)
            with pytest.raises(herald.PermissionDenied):
                await hub.publish(t, 1, confirm=True)
        async with hub.subscribe(*allowed) as sub:
            for t in allowed:
                assert (await hub.publish(t, t, confirm=True)).receivers == 1
            got = await take(sub, len(allowed))
            assert sorted(m.topic for m in got) == sorted(allowed)
    wrong = cluster.url.replace("redis+cluster://", f"redis+cluster://{prefix}:wrong@")
    with pytest.raises(herald.AuthenticationFailed):
        async with AsyncClient(wrong):
            pass


async def test_gateway_counts_sharded_subscribers(cluster: LocalCluster) -> None:
    from herald.gateway import GatewayConfig
    from herald.gateway.state import Gateway

    topics = topics_on_every_shard(cluster, "gw.", 1)
    async with (
        AsyncClient(cluster.url) as hub,
        AsyncClient(cluster.url) as a,
        AsyncClient(cluster.url) as b,
    ):
        gateway = Gateway(hub, GatewayConfig(), owns_hub=False)
        assert await gateway.subscribers(topics) == dict.fromkeys(topics, 0)
        async with a.subscribe(*topics), b.subscribe(topics[0]):
            # Each count comes from the topic's own shard, in the order asked.
            reply = await hub.execute("PUBSUB", "SHARDNUMSUB", *topics)
            assert reply == [x for t in topics for x in (t.encode(), 2 if t == topics[0] else 1)]
            counts = await gateway.subscribers(topics)
            assert counts == {t: 2 if t == topics[0] else 1 for t in topics}


# -- a cluster of this module's own, for faults --------------------------------------------


@pytest.fixture(scope="module")
def faulty() -> Iterator[LocalCluster]:
    with LocalCluster(primaries=3, replicas_per_primary=1, node_timeout=1000) as c:
        yield c


async def test_slot_migration_of_a_busy_topic(faulty: LocalCluster) -> None:
    source = faulty.primaries()[0]
    target = faulty.primaries()[1]
    topic = topic_on(faulty, source, "busy.")
    gaps: list[Gap] = []
    async with AsyncClient(faulty.url) as pub, AsyncClient(faulty.url) as sub_client:
        sub = await sub_client.subscribe(topic, on_gap=gaps.append, max_pending=1_000_000)
        stop = asyncio.Event()
        sent = 0

        async def publish() -> None:
            nonlocal sent
            while not stop.is_set():
                await pub.publish(topic, sent)
                sent += 1
                if sent % 20 == 0:
                    await asyncio.sleep(0.001)

        task = asyncio.create_task(publish())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(faulty.migrate_slot, key_slot(topic), target)
        await asyncio.sleep(0.5)
        stop.set()
        await task
        # After the move: subscribed on the new primary, every message arrives again.
        await until(lambda: target.call("PUBSUB", "SHARDNUMSUB", topic)[1] == 1)
        assert source.call("PUBSUB", "SHARDNUMSUB", topic)[1] == 0
        for i in range(50):
            await pub.publish(topic, -1 - i)
        received: list[int] = []
        async with asyncio.timeout(10):
            while -50 not in received:
                received.append((await sub.next()).data)
        during = [d for d in received if d >= 0]
        assert len(during) == len(set(during))  # never twice
        assert during == sorted(during)  # in order
        assert received[-50:] == [-1 - i for i in range(50)]
        assert len(during) <= sent
        assert gaps, "the move is reported as a gap"
        assert sub.stats.gaps == len(gaps)
        await sub.close()


async def test_slot_migration_of_a_durable_topic(faulty: LocalCluster) -> None:
    source = faulty.primaries()[0]
    target = faulty.primaries()[1]
    topic = topic_on(faulty, source, "moving.")
    async with AsyncClient(faulty.url) as pub, AsyncClient(faulty.url) as reader:
        await pub.declare(topic, durable=True)
        for i in range(20):  # 21 keys in the slot: the move takes a while, key by key
            await pub.publish(topic, -1 - i, msg_id=f"pre{i}")
        acked: list[int] = []
        errors: list[Exception] = []
        stop = asyncio.Event()

        async def publish() -> None:
            for i in itertools.count():
                if stop.is_set():
                    return
                try:
                    await pub.publish(topic, i, msg_id=f"m{i}" if i % 2 else None)
                    acked.append(i)
                except herald.HeraldError as exc:
                    errors.append(exc)
                await asyncio.sleep(0.003)

        task = asyncio.create_task(publish())
        await asyncio.sleep(0.2)
        await asyncio.to_thread(
            faulty.migrate_slot, key_slot(topic), target, batch=1, between_batches=0.03
        )
        await asyncio.sleep(0.2)
        stop.set()
        await task
        assert errors == []
        assert isinstance(pub._link, ClusterLink)
        assert pub._link.redirects > 0  # it did publish into the moving slot
        consumed: Counter[int] = Counter()
        async with reader.consume(topic, "g", start="all") as c:
            async for msg in c:
                consumed[msg.data] += 1
                await msg.ack()
                if len(consumed) == len(acked) + 20:
                    break
        assert set(consumed) == set(acked) | {-1 - i for i in range(20)}
        assert max(consumed.values()) == 1
        assert int(target.call("XLEN", f"herald:{{{topic}}}:s")) == len(acked) + 20


async def test_failover_under_live_and_durable_load(faulty: LocalCluster) -> None:
    # The primary of Herald's registry keys ({herald}): policies and pattern leases move too.
    victim = faulty.primary_for(TOPICS_KEY)
    durable = topic_on(faulty, victim, "ledger.")
    live = topic_on(faulty, victim, "ticks.")
    watched = topic_on(faulty, faulty.primaries()[0], "watched.")
    gaps: list[Gap] = []
    async with AsyncClient(faulty.url) as pub, AsyncClient(faulty.url) as reader:
        await pub.declare(durable, durable=True)
        sub = await reader.subscribe(live, on_gap=gaps.append, max_pending=1_000_000)
        psub = await reader.subscribe("watched.*", max_pending=1_000_000)
        acked: set[int] = set()
        unknown: set[int] = set()
        consumed: Counter[int] = Counter()
        stop = asyncio.Event()

        async def publish() -> None:
            for i in itertools.count():
                if stop.is_set():
                    return
                try:
                    await pub.publish(durable, i)
                    acked.add(i)
                except herald.HeraldError:
                    unknown.add(i)  # lost connection, or no primary yet: outcome unknown
                    await asyncio.sleep(0.05)
                await pub.publish(live, i)
                await pub.publish(watched, i)
                await asyncio.sleep(0.002)

        async def consume() -> None:
            async with reader.consume(durable, "g", start="all", ack_wait=2) as c:
                async for msg in c:
                    consumed[msg.data] += 1
                    await msg.ack()

        tasks = [asyncio.create_task(publish()), asyncio.create_task(consume())]
        await asyncio.sleep(0.5)
        faulty.kill(victim)
        new = await asyncio.to_thread(faulty.wait_failover, victim)
        assert new is not victim
        await asyncio.sleep(1.0)
        stop.set()
        await tasks[0]
        # Every acked durable message is delivered (once, or again after a redelivery).
        await until(lambda: acked <= set(consumed), timeout=20)
        assert len(acked) > 50
        assert set(consumed) <= acked | unknown
        # The live subscription resumed on the promoted replica and reported its gap.
        for i in range(20):
            await pub.publish(live, -1 - i)
        async with asyncio.timeout(10):
            while (await sub.next()).data != -20:
                pass
        assert gaps
        assert new.call("PUBSUB", "SHARDNUMSUB", live)[1] == 1
        # The pattern subscription (its connection was on the killed node) resumed too.
        for i in range(20):
            await pub.publish(watched, -1 - i)
        async with asyncio.timeout(10):
            while (await psub.next()).data != -20:
                pass
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)
        await sub.close()
        await psub.close()


async def test_durable_topics_warn_when_any_primary_keeps_nothing_on_disk(
    cluster: LocalCluster, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The persistence check reads every primary, not only the one the client talks to first:
    each primary in turn is the one without persistence, and each time the client warns."""
    warning = "on a server without persistence"
    primaries = cluster.primaries()
    before = {node: node.call("CONFIG", "GET", "appendonly")[1] for node in primaries}
    try:
        for odd in primaries:
            for node in primaries:
                node.call("CONFIG", "SET", "appendonly", "no" if node is odd else "yes")
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="herald"):
                async with AsyncClient(cluster.url) as hub:
                    await hub.declare(topic, durable=True)
            assert [r for r in caplog.records if warning in r.getMessage()], odd
        for node in primaries:
            node.call("CONFIG", "SET", "appendonly", "yes")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="herald"):
            async with AsyncClient(cluster.url) as hub:
                await hub.declare(topic, durable=True)
        assert not [r for r in caplog.records if warning in r.getMessage()]
    finally:
        for node, value in before.items():
            node.call("CONFIG", "SET", "appendonly", value)


async def test_confirmed_publish_redirected_then_refused_raises(own_cluster: LocalCluster) -> None:
    # A durable publish's XADD answered MOVED (its slot moved since the map was read) is sent
    # again to the new primary; if that one refuses it (here: out of memory), the publish
    # raises the server's error, as it does without a redirect.
    source, target = own_cluster.primaries()[:2]
    topic = topic_on(own_cluster, source, "refused.")
    async with AsyncClient(own_cluster.url) as pub:
        await pub.declare(topic, durable=True)
        await pub.publish(topic, 0)
        await asyncio.to_thread(own_cluster.migrate_slot, key_slot(topic), target)
        target.call("CONFIG", "SET", "maxmemory-policy", "noeviction")
        target.call("CONFIG", "SET", "maxmemory", "1")
        try:
            with pytest.raises(herald.ServerError, match="OOM"):
                await asyncio.wait_for(pub.publish(topic, 1), 5)
        finally:
            target.call("CONFIG", "SET", "maxmemory", "0")
        assert isinstance(pub._link, ClusterLink)
        assert pub._link.redirects > 0


async def test_closing_while_a_redirected_command_waits_ends_the_caller(
    own_cluster: LocalCluster,
) -> None:
    # A publish whose XADD was redirected waits for the new primary's reply; if the client
    # closes meanwhile, the publish ends with ClientClosed instead of waiting forever.
    source, target = own_cluster.primaries()[:2]
    topic = topic_on(own_cluster, source, "closing.")
    pub = AsyncClient(own_cluster.url, connect_timeout=30, probe_interval=30)
    await pub.connect()
    try:
        await pub.declare(topic, durable=True)
        await pub.publish(topic, 0)
        await asyncio.to_thread(own_cluster.migrate_slot, key_slot(topic), target)
        assert isinstance(pub._link, ClusterLink)
        redirects = pub._link.redirects
        own_cluster.pause(target)
        try:
            publishing = asyncio.ensure_future(pub.publish(topic, 1))
            for _ in range(200):
                if pub._link.redirects > redirects:
                    break
                await asyncio.sleep(0.01)
            assert pub._link.redirects > redirects
            await asyncio.sleep(0.1)  # the retry is on its way to the paused primary
            assert not publishing.done()
            await pub.close()
            with pytest.raises((herald.ClientClosed, herald.ConnectionLost)):
                await asyncio.wait_for(publishing, 5)
        finally:
            own_cluster.resume(target)
    finally:
        await pub.close()


async def test_a_warning_every_primary_calls_for_is_logged_once(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    primaries = cluster.primaries()
    before = {
        node: node.call("CONFIG", "GET", "client-output-buffer-limit")[1] for node in primaries
    }
    try:
        for node in primaries:
            node.call("CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0")
        with caplog.at_level(logging.WARNING, logger="herald"):
            async with AsyncClient(cluster.url) as hub:
                await hub.publish("warned.once", 1, confirm=True)
        said = [r for r in caplog.records if "client-output-buffer-limit" in r.getMessage()]
        assert len(said) == 1
    finally:
        for node, value in before.items():
            node.call("CONFIG", "SET", "client-output-buffer-limit", value)
