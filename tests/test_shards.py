"""Topics placed over several real servers (``shards=``): every kind of operation routed to its
topic's shard, patterns on every shard, a Sentinel group as a shard, the gateway and the CLI,
one shard down or restarting. The placement function alone: test_shards_core.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import herald
from herald import AsyncClient
from herald._core.shards import shard_of
from herald._server import EmbeddedServer
from herald.testing import LocalSentinel, call

_ids = itertools.count()


@pytest.fixture(scope="module")
def servers() -> Iterator[list[EmbeddedServer]]:
    started = [EmbeddedServer(persist=False).start() for _ in range(3)]
    try:
        yield started
    finally:
        for srv in started:
            srv.cleanup()


def shard_map(servers: list[EmbeddedServer]) -> dict[str, str]:
    return {f"s{i}": srv.url for i, srv in enumerate(servers)}


def topics_on(names: list[str], shard: str, prefix: str, n: int = 1) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        name = f"{prefix}{next(_ids)}"
        if shard_of(names, name) == shard:
            out.append(name)
    return out


def channels(srv: EmbeddedServer) -> set[bytes]:
    return set(call(srv.port, "PUBSUB", "CHANNELS"))


async def take(sub: herald.Subscription, n: int, timeout: float = 5.0) -> list[herald.Message]:
    out: list[herald.Message] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await sub.next())
    return out


async def test_live_topics_on_their_shards(servers: list[EmbeddedServer]) -> None:
    shards = shard_map(servers)
    names = list(shards)
    topics = [t for s in names for t in topics_on(names, s, "live.")]
    async with (
        AsyncClient(shards=shards) as pub,
        AsyncClient(shards=shards) as sub_client,
        sub_client.subscribe(*topics) as sub,
    ):
        # each topic is subscribed on its own shard only
        for i, srv in enumerate(servers):
            assert channels(srv) >= {topics[i].encode()}
            others = {t.encode() for j, t in enumerate(topics) if j != i}
            assert not channels(srv) & others
        for t in topics:
            await pub.publish(t, {"t": t})
        got = await take(sub, len(topics))
        assert sorted(m.topic for m in got) == sorted(topics)
        ack = await pub.publish(topics[1], "x", confirm=True)
        assert ack is not None
        assert ack.receivers == 1
        assert (await take(sub, 1))[0].data == "x"


async def test_patterns_on_every_shard(servers: list[EmbeddedServer]) -> None:
    shards = shard_map(servers)
    names = list(shards)
    prefix = f"pat{next(_ids)}."
    topics = [t for s in names for t in topics_on(names, s, prefix, 2)]
    async with AsyncClient(shards=shards) as hub, hub.subscribe(prefix + "*") as sub:
        for srv in servers:
            assert call(srv.port, "PUBSUB", "NUMPAT") >= 1
        for t in topics:
            await hub.publish(t, t)
        got = await take(sub, len(topics))
        assert sorted(m.data for m in got) == sorted(topics)  # each once
        with pytest.raises(TimeoutError):
            await take(sub, 1, timeout=0.3)


async def test_policies_and_durable_consume(servers: list[EmbeddedServer]) -> None:
    shards = shard_map(servers)
    names = list(shards)
    a, b = topics_on(names, "s1", "dur."), topics_on(names, "s2", "dur.")
    async with AsyncClient(shards=shards) as hub, AsyncClient(shards=shards) as other:
        await hub.declare(a[0], durable=True)
        await hub.declare(b[0], history=10)
        # each policy is stored on its topic's shard (with the dead-letter topic's)
        stored = [set(call(srv.port, "HKEYS", "herald:{herald}:topics")) for srv in servers]
        assert a[0].encode() in stored[1]
        assert (a[0] + ".dead").encode() in stored[1]
        assert b[0].encode() in stored[2]
        assert b[0].encode() not in stored[1] | stored[0]
        # every client sees the merged registry
        listed = await other.topics()
        assert listed[a[0]].durable
        assert listed[b[0]].history == 10
        for i in range(5):
            ack = await hub.publish(a[0], {"i": i})
            assert ack is not None
            assert ack.offset
        assert call(servers[1].port, "XLEN", f"herald:{{{a[0]}}}:s") == 5
        async with other.consume(a[0], "g", start="all") as consumer:
            got = []
            async with asyncio.timeout(5):
                async for msg in consumer:
                    got.append(msg.data["i"])
                    await msg.ack()
                    if len(got) == 5:
                        break
        assert got == list(range(5))
        ack = await hub.publish(b[0], "h", confirm=True)
        assert ack is not None
        assert ack.offset == 1
        await hub.publish(b[0], "i")  # fire-and-forget: a batched script call, same shard
        await hub.flush()
        assert call(servers[2].port, "EXISTS", f"herald:{{{b[0]}}}:h") == 1
        assert [m.data for m in await hub.history(b[0])] == ["h", "i"]
        assert await hub.delete_topic(a[0])
        assert a[0] not in await other.topics()


async def test_request_reply_across_shards(servers: list[EmbeddedServer]) -> None:
    shards = shard_map(servers)
    names = list(shards)
    topics = [t for s in names for t in topics_on(names, s, "rpc.")]
    async with AsyncClient(shards=shards) as server, AsyncClient(shards=shards) as caller:

        async def double(msg: herald.Message) -> int:
            return int(msg.data) * 2

        subs = [await server.subscribe(t, handler=double) for t in topics]
        for i, t in enumerate(topics):
            reply = await caller.request(t, i + 1, timeout=5)
            assert reply.data == (i + 1) * 2
        for s in subs:
            await s.close()


async def test_one_shard_down(tmp_path: Path) -> None:
    started = [EmbeddedServer(tmp_path / f"v{i}", persist=False).start() for i in range(2)]
    try:
        shards = {f"s{i}": srv.url for i, srv in enumerate(started)}
        names = list(shards)
        up, down = topics_on(names, "s0", "up.")[0], topics_on(names, "s1", "down.")[0]
        async with AsyncClient(shards=shards, publish_timeout=0.5, subscribe_timeout=0.5) as hub:
            sub = await hub.subscribe(up)
            durable = topics_on(names, "s0", "up.durable.")[0]
            await hub.declare(durable, durable=True)
            started[1].kill()
            await asyncio.sleep(0.2)
            # the other shard's topics work on
            assert (await hub.publish(up, 1, confirm=True)) is not None
            assert (await take(sub, 1))[0].data == 1
            # a consumer of a durable topic on the live shard starts and reads
            await hub.publish(durable, "kept")
            async with hub.consume(durable, "g", start="all") as consumer:
                msg = await consumer.next(5)
                assert msg.data == "kept"
                await msg.ack()
            # this shard's topics fail, naming the server
            address = f"127.0.0.1:{started[1].port}"
            with pytest.raises(herald.Timeout, match=address):
                await hub.publish(down, 1, confirm=True)
            with pytest.raises((herald.Timeout, herald.ConnectionFailed), match=address):
                await hub.subscribe(down)
            # a policy on the live shard: its registry is written, the other read from memory
            await hub.declare(topics_on(names, "s0", "up.")[0], history=5)
            # a policy on the down shard cannot be stored
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await hub.declare(topics_on(names, "s1", "down.")[0], history=5)
            await sub.close()
        # a client cannot start with a shard down: the error names it
        with pytest.raises(herald.ConnectionFailed, match=address):
            async with AsyncClient(shards=shards) as hub:
                pass
    finally:
        for srv in started:
            srv.cleanup()


async def test_a_shard_restarts(tmp_path: Path) -> None:
    """A subscription over two shards: the restart of one is a gap for its names only."""
    started = [EmbeddedServer(tmp_path / f"v{i}", persist=False).start() for i in range(2)]
    try:
        shards = {f"s{i}": srv.url for i, srv in enumerate(started)}
        names = list(shards)
        up, down = topics_on(names, "s0", "r.up.")[0], topics_on(names, "s1", "r.down.")[0]
        gaps: list[herald.Gap] = []
        async with (
            AsyncClient(shards=shards, probe_interval=0.2) as hub,
            hub.subscribe(up, down, on_gap=gaps.append) as sub,
        ):
            started[1].kill()
            await hub.publish(up, "during")
            assert (await take(sub, 1))[0].data == "during"
            started[1].start()
            async with asyncio.timeout(10):
                while not gaps:  # noqa: ASYNC110 - a callback fills it
                    await asyncio.sleep(0.05)
            assert [g.names for g in gaps] == [(down,)]
            await hub.publish(down, "after", confirm=True)
            assert (await take(sub, 1))[0].data == "after"
    finally:
        for srv in started:
            srv.cleanup()


def test_threaded_client_and_url_form(servers: list[EmbeddedServer]) -> None:
    url = "redis+shards://" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
    names = [f"127.0.0.1:{s.port}" for s in servers]
    topics = [t for s in names for t in topics_on(names, s, "sync.")]
    with herald.Client(url) as hub:
        with hub.subscribe(*topics) as sub:
            for t in topics:
                hub.publish(t, t)
            got = [sub.next(timeout=5) for _ in topics]
        assert sorted(m.data for m in got) == sorted(topics)
        for srv, t in zip(servers, topics, strict=True):
            assert call(srv.port, "PUBSUB", "NUMSUB", t)[1] == 0  # unsubscribed on its shard


def test_cli_takes_the_sharded_url(servers: list[EmbeddedServer]) -> None:
    url = "redis+shards://" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
    names = [f"127.0.0.1:{s.port}" for s in servers]
    topic = topics_on(names, names[2], "cli.")[0]
    herald_cli = [sys.executable, "-m", "herald.cli"]

    def ok(*args: str) -> str:
        out = subprocess.run(
            [*herald_cli, *args, "--url", url], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    ok("topics", "declare", topic, "--durable")
    assert topic in ok("topics", "list")
    assert topic.encode() in call(servers[2].port, "HKEYS", "herald:{herald}:topics")
    ok("pub", topic, "hello")
    assert call(servers[2].port, "XLEN", f"herald:{{{topic}}}:s") == 1
    doc = json.loads(ok("monitor", "cli.*", "--once", "--json"))
    assert len(doc["server"]["nodes"]) == 3
    assert topic in {r["topic"] for r in doc["topics"]}
    bad = subprocess.run(
        [*herald_cli, "topics", "list", "--url", "redis://h1,h2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode != 0
    assert "redis+shards://" in bad.stderr


async def test_a_sentinel_group_as_a_shard(sentinel: LocalSentinel, server: EmbeddedServer) -> None:
    """A shard may be a Sentinel group: its connections find the primary through the sentinels."""
    shards = {"sentinel": sentinel.url, "plain": server.url}
    names = list(shards)
    on_sentinel = topics_on(names, "sentinel", "sg.", 2)
    on_plain = topics_on(names, "plain", "sg.")[0]
    async with AsyncClient(shards=shards) as hub:
        await hub.declare(on_sentinel[1], durable=True)
        async with hub.subscribe(on_sentinel[0], on_plain) as sub:
            await hub.publish(on_sentinel[0], "s")
            await hub.publish(on_plain, "p")
            assert sorted(m.data for m in await take(sub, 2)) == ["p", "s"]
        await hub.publish(on_sentinel[1], {"n": 1})
        primary = sentinel.primary
        assert call(primary.port, "XLEN", f"herald:{{{on_sentinel[1]}}}:s") == 1
        assert call(server.port, "EXISTS", f"herald:{{{on_sentinel[1]}}}:s") == 0


async def test_gateway_over_shards(servers: list[EmbeddedServer]) -> None:
    """The gateway on a sharded client: publishes routed, /topics merged over the shards with
    each topic's subscribers counted on its own shard."""
    import httpx

    from herald.gateway import GatewayConfig
    from herald.gateway.serve import BackgroundGateway

    url = "redis+shards://" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
    names = [f"127.0.0.1:{s.port}" for s in servers]
    topics = [topics_on(names, n, "gw.")[0] for n in names]
    gw = await asyncio.to_thread(lambda: BackgroundGateway(url, GatewayConfig()).start())
    try:
        async with AsyncClient(url) as hub, httpx.AsyncClient(base_url=gw.url) as api:
            for t in topics:
                await hub.declare(t, durable=True)
            await asyncio.sleep(1.5)  # the gateway's client reads policies every second
            async with hub.subscribe(*topics) as sub:
                for t in topics:
                    r = await api.post(f"/topics/{t}", json={"t": t})
                    assert r.status_code == 200
                    assert r.json()["offset"]  # stored: the policy came from t's shard
                got = await take(sub, len(topics))
                assert sorted(m.topic for m in got) == sorted(topics)
                listing = (await api.get("/topics")).json()
            entries = {e["topic"]: e for e in listing["topics"]}
            for i, t in enumerate(topics):
                assert entries[t]["kind"] == "durable"
                assert entries[t]["subscribers"] == 1
                assert call(servers[i].port, "XLEN", f"herald:{{{t}}}:s") == 1
    finally:
        await asyncio.to_thread(gw.stop)


async def test_every_shard_is_checked(
    servers: list[EmbeddedServer], caplog: pytest.LogCaptureFixture
) -> None:
    """The server checks at connect (an evicting maxmemory-policy) run on every shard."""
    call(servers[2].port, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    try:
        async with AsyncClient(shards=shard_map(servers)):
            pass
    finally:
        call(servers[2].port, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    assert any("allkeys-lru" in r.getMessage() for r in caplog.records)


async def test_a_client_with_another_list_is_noticed(
    servers: list[EmbeddedServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Clients given different lists of shards place topics differently: the later one warns."""
    full = shard_map(servers)
    fewer = {n: u for n, u in full.items() if n != "s2"}
    async with AsyncClient(shards=full):
        caplog.clear()
        async with AsyncClient(shards=full) as same:
            assert ("s0", "s1") not in same._link.other_lists  # type: ignore[union-attr]
        async with AsyncClient(shards=fewer) as other:
            assert ("s0", "s1", "s2") in other._link.other_lists  # type: ignore[union-attr]
    warned = [r.getMessage() for r in caplog.records if "another client uses" in r.getMessage()]
    assert any("(s0, s1, s2) than this one (s0, s1)" in m for m in warned)
    assert call(servers[0].port, "HEXISTS", "herald:{herald}:shards", "s0\ns1") == 1


async def test_raw_commands_on_their_shard(servers: list[EmbeddedServer]) -> None:
    """Pipelines, transactions (with WATCH), scripts and blocking commands run on the shard of
    their keys; keys on two shards are refused as a cluster refuses keys of two slots."""
    shards = shard_map(servers)
    names = list(shards)
    a = f"raw:{{{topics_on(names, 's1', 'rawa.')[0]}}}:n"
    b = f"raw:{{{topics_on(names, 's2', 'rawb.')[0]}}}:n"
    async with AsyncClient(shards=shards) as hub:
        async with hub.pipeline() as pipe:
            pipe.queue("SET", a, 1).queue("SET", b, 2)
        assert call(servers[1].port, "GET", a) == b"1"
        assert call(servers[2].port, "GET", b) == b"2"
        async with hub.transaction(watch=[a]) as tx:
            n = int(await tx.execute("GET", a))
            tx.queue("SET", a, n + 10)
        assert call(servers[1].port, "GET", a) == b"11"
        async with hub.transaction() as tx:
            tx.queue("INCR", b)
        assert call(servers[2].port, "GET", b) == b"3"
        with pytest.raises(herald.CrossSlot):
            await hub.transaction().queue("INCR", a).queue("INCR", b).commit()
        with pytest.raises(herald.CrossSlot):
            await hub.script("return 1")(keys=[a, b])
        assert await hub.script("return redis.call('GET', KEYS[1])")(keys=[b]) == b"3"
        call(servers[2].port, "RPUSH", b + "q", "x")
        assert await hub.execute_blocking("BLPOP", b + "q", 1) == [(b + "q").encode(), b"x"]


async def test_multi_key_commands_across_shards_are_refused(
    servers: list[EmbeddedServer],
) -> None:
    """A command whose keys are on two shards would run on the first key's shard alone (DEL
    missing a key, MSET writing one where nobody reads it): refused, as a cluster refuses keys
    of two slots; keys on one shard run there."""
    shards = shard_map(servers)
    names = list(shards)
    a = topics_on(names, "s1", "mka.")[0]
    b = topics_on(names, "s2", "mkb.")[0]
    async with AsyncClient(shards=shards) as hub:
        await hub.execute("SET", b, "x")
        for args in (("MSET", a, 1, b, 2), ("DEL", a, b), ("RENAME", a, b), ("MGET", a, b)):
            with pytest.raises(herald.CrossSlot):
                await hub.execute(*args)
        with pytest.raises(herald.CrossSlot):
            await hub.transaction().queue("MSET", a, 1, b, 2).commit()
        with pytest.raises(herald.CrossSlot):
            await hub.execute_blocking("BLPOP", a, b, 1)
        assert call(servers[2].port, "GET", b) == b"x"
        assert call(servers[1].port, "GET", b) is None
        a2 = topics_on(names, "s1", "mka.")[0]
        assert await hub.execute("MSET", a, 1, a2, 2) == b"OK"
        assert await hub.execute("DEL", a, a2) == 2


async def test_responder_groups_on_their_shard(servers: list[EmbeddedServer]) -> None:
    """A responder group's keys and its members' reads are on its topic's shard."""
    shards = shard_map(servers)
    names = list(shards)
    topic = topics_on(names, "s2", "group.")[0]
    async with AsyncClient(shards=shards) as worker, AsyncClient(shards=shards) as caller:

        async def double(msg: herald.Message) -> int:
            return int(msg.data) * 2

        async with worker.respond(topic, double, group="workers"):
            assert (await caller.request(topic, 21, timeout=5)).data == 42
            key = f"herald:{{{topic}}}:responders"
            assert [call(srv.port, "EXISTS", key) for srv in servers] == [0, 0, 1]


async def test_active_topics_over_every_shard(servers: list[EmbeddedServer]) -> None:
    shards = shard_map(servers)
    names = list(shards)
    prefix = f"act{next(_ids)}."
    topics = [topics_on(names, n, prefix)[0] for n in names]
    async with AsyncClient(shards=shards) as hub, hub.subscribe(*topics):
        assert await hub.active_topics(prefix + "*") == dict.fromkeys(sorted(topics), 1)
