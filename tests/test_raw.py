"""Raw commands that cannot corrupt the client: refused commands, pipelines, transactions,
scripts, blocking commands and decoded replies, on a real server, Cluster and Sentinel."""

from __future__ import annotations

import asyncio
import itertools

import pytest

import herald
from herald import CrossSlot, TransactionAborted, UnsafeCommand
from herald._core.raw import check_command
from herald.testing import LocalCluster, LocalSentinel

_ids = itertools.count()


def key(prefix: str = "raw") -> str:
    return f"{prefix}:{{t{next(_ids)}}}"


# -- which commands are refused ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("MONITOR",), "MONITOR"),
        (("multi",), "MULTI"),
        (("Exec",), "EXEC"),
        (("WATCH", "k"), "WATCH"),
        (("subscribe", "c"), "SUBSCRIBE"),
        (("SSUBSCRIBE", "c"), "SSUBSCRIBE"),
        (("PUNSUBSCRIBE",), "PUNSUBSCRIBE"),
        (("select", 1), "SELECT"),
        (("client", "reply", "off"), "CLIENT REPLY"),
        ((b"CLIENT", b"TRACKING", b"on"), "CLIENT TRACKING"),
        (("RESET",), "RESET"),
        (("QUIT",), "QUIT"),
        (("HELLO", 3), "HELLO"),
        (("AUTH", "pw"), "AUTH"),
        (("PSYNC", "?", -1), "PSYNC"),
        (("BLPOP", "q", 0), "BLPOP"),
        (("bzpopmin", "z", 1), "BZPOPMIN"),
        (("BLMOVE", "a", "b", "LEFT", "RIGHT", 0), "BLMOVE"),
        (("XREAD", "COUNT", 1, "block", 0, "STREAMS", "s", "$"), "XREAD"),
        (("XREADGROUP", "GROUP", "g", "c", "BLOCK", 5, "STREAMS", "s", ">"), "XREADGROUP"),
        (("WAIT", 1, 0), "WAIT"),
        (("WAITAOF", 1, 0, 60_000), "WAITAOF"),
    ],
)
def test_refused(args: tuple[str | bytes | int, ...], name: str) -> None:
    with pytest.raises(UnsafeCommand) as info:
        check_command(args, 2.5)
    assert info.value.command == name
    assert info.value.alternative
    assert isinstance(info.value, herald.ConfigurationError)


@pytest.mark.parametrize(
    "args",
    [
        ("GET", "k"),
        ("CLIENT", "SETNAME", "x"),
        ("CLIENT", "LIST"),
        ("XREAD", "STREAMS", "BLOCK", "$"),  # a stream named BLOCK, not the option
        ("XREADGROUP", "GROUP", "BLOCK", "BLOCK", "STREAMS", "s", ">"),  # group, consumer
        ("WAIT", 0, 100),
        ("PUBLISH", "c", "multi"),
    ],
)
def test_allowed(args: tuple[str | int, ...]) -> None:
    check_command(args, 2.5)


def test_blocking_allowed_on_a_dedicated_connection() -> None:
    check_command(("BLPOP", "q", 0), None, blocking=True)
    with pytest.raises(UnsafeCommand):
        check_command(("MULTI",), None, blocking=True)


# -- the three ways the shared connection used to break --------------------------------------------


async def test_monitor_refused_and_connection_healthy(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(UnsafeCommand, match="MONITOR"):
            await hub.execute("monitor")
        assert await hub.execute("ECHO", "a") == b"a"
        async with hub.subscribe(topic) as sub:
            ack = await hub.publish(topic, "x", confirm=True)
            assert ack.receivers == 1
            assert (await sub.next(timeout=5)).data == "x"


async def test_transaction_does_not_swallow_a_concurrent_confirmed_publish(
    url: str, topic: str
) -> None:
    k = key()
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic):
        with pytest.raises(UnsafeCommand, match="transaction"):
            await hub.execute("MULTI")

        async def transact() -> list[object]:
            async with hub.transaction() as tx:
                tx.queue("INCR", k)
                await asyncio.sleep(0)  # let the publisher queue its command meanwhile
                tx.queue("INCR", k)
            return tx.replies

        results = await asyncio.gather(
            *(transact() for _ in range(20)),
            *(hub.publish(topic, i, confirm=True) for i in range(20)),
        )
        acks = results[20:]
        assert all(isinstance(a, herald.PubAck) and a.receivers == 1 for a in acks)
        incremented = sorted(v for r in results[:20] for v in r)  # type: ignore[attr-defined]
        assert incremented == list(range(1, 41))
        assert await hub.execute("GET", k) == b"40"


async def test_blocking_command_leaves_the_shared_connection_free(url: str, topic: str) -> None:
    q = key("queue")
    async with herald.AsyncClient(url, probe_interval=0.5) as hub, herald.AsyncClient(url) as other:
        with pytest.raises(UnsafeCommand, match="execute_blocking"):
            await hub.execute("BLPOP", q, 0)
        waiting = asyncio.create_task(hub.execute_blocking("BLPOP", q, 0, decode=True))
        await asyncio.sleep(0.1)
        async with hub.subscribe(topic) as sub:
            started = asyncio.get_running_loop().time()
            for i in range(50):
                ack = await hub.publish(topic, i, confirm=True)
                assert ack.receivers == 1
            assert asyncio.get_running_loop().time() - started < 2
            assert [m.data for m in [await sub.next(timeout=5) for _ in range(50)]] == list(
                range(50)
            )
        await asyncio.sleep(1.2)  # more than the probe timeout: the probe was not blocked
        assert hub.stats.reconnects == 0
        assert not waiting.done()
        await other.execute("RPUSH", q, "job")
        assert await asyncio.wait_for(waiting, 5) == [q, "job"]


async def test_cancelled_blocking_command_closes_its_connection(url: str) -> None:
    q = key("queue")
    async with herald.AsyncClient(url) as hub:
        waiting = asyncio.create_task(hub.execute_blocking("BLPOP", q, 0))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.1)
        # The cancelled BLPOP's connection is gone, so a value pushed now is not swallowed.
        await hub.execute("RPUSH", q, "v")
        await asyncio.sleep(0.1)
        assert await hub.execute("LRANGE", q, 0, -1) == [b"v"]
        # A finished one's connection is reused.
        assert await hub.execute_blocking("BLPOP", q, 1) == [q.encode(), b"v"]
        assert await hub.execute_blocking("BLPOP", q, 0.05) is None
        assert sum(len(v) for v in hub._spares._idle.values()) == 1


# -- pipeline, transaction, script, decode -------------------------------------------------------


async def test_pipeline_replies_in_order(url: str) -> None:
    k = key()
    async with herald.AsyncClient(url) as hub:
        async with hub.pipeline(decode=True) as pipe:
            for i in range(100):
                pipe.queue("RPUSH", k, i)
            pipe.queue("LRANGE", k, 0, 2)
        assert pipe.replies[:3] == [1, 2, 3]
        assert pipe.replies[-1] == ["0", "1", "2"]
        pipe = hub.pipeline(raise_on_error=False)
        replies = await pipe.queue("SET", k + "s", "v").queue("INCR", k + "s").run()
        assert replies[0] == b"OK"
        assert isinstance(replies[1], herald.ServerError)
        with pytest.raises(herald.ServerError, match="not an integer"):
            await hub.pipeline().queue("INCR", k + "s").queue("GET", k + "s").run()
        with pytest.raises(UnsafeCommand):
            hub.pipeline().queue("SUBSCRIBE", "x")


async def test_decode(url: str) -> None:
    k = key()
    async with herald.AsyncClient(url) as hub:
        await hub.execute("HSET", k, "a", "1", "b", "é")
        assert sorted(await hub.execute("HGETALL", k, decode=True)) == ["1", "a", "b", "é"]
        assert await hub.execute("GET", k + "missing", decode=True) is None
        await hub.execute("SET", k + "bin", b"\xff")
        with pytest.raises(herald.DecodeError):
            await hub.execute("GET", k + "bin", decode=True)


async def test_transaction_watch_aborted_and_retried(url: str) -> None:
    k = key("stock")
    async with herald.AsyncClient(url) as hub, herald.AsyncClient(url) as other:
        await hub.execute("SET", k, 10)

        async def sell_one() -> None:
            async with hub.transaction(watch=[k]) as tx:
                stock = int(await tx.execute("GET", k))
                await other.execute("DECR", k)  # someone else got there first
                tx.queue("SET", k, stock - 1)

        with pytest.raises(TransactionAborted) as info:
            await sell_one()
        assert info.value.watched == [k]
        assert await hub.execute("GET", k) == b"9"
        async with hub.transaction(watch=[k], decode=True) as tx:
            stock = int(await tx.execute("GET", k))
            tx.queue("SET", k, stock - 1)
            tx.queue("GET", k)
        assert tx.replies == ["OK", "8"]
        # Nothing queued in the block: the watch ends, the connection goes back clean.
        async with hub.transaction(watch=[k]) as tx:
            await tx.execute("GET", k)
        await other.execute("SET", k, 1)
        async with hub.transaction(watch=[k]) as tx:  # the reused connection has no old WATCH
            tx.queue("GET", k)
        assert tx.replies == [b"1"]


async def test_transaction_queue_error_runs_nothing(url: str) -> None:
    k = key()
    async with herald.AsyncClient(url) as hub:
        tx = hub.transaction().queue("SET", k, 1).queue("GET")  # GET: wrong arity
        with pytest.raises(herald.ServerError, match="EXECABORT"):
            await tx.commit()
        assert await hub.execute("EXISTS", k) == 0
        assert await hub.execute("PING") == b"PONG"


async def test_script_evalsha_with_noscript_fallback(url: str) -> None:
    k = key()
    async with herald.AsyncClient(url) as hub:
        add = hub.script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        assert await add(keys=[k], args=[5]) == 5
        await hub.execute("SCRIPT", "FLUSH")
        assert await add(keys=[k], args=[2]) == 7  # NOSCRIPT, then EVAL
        assert await hub.execute("SCRIPT", "EXISTS", add.sha) == [1]
        assert await hub.script("return 'x'")(decode=True) == "x"


def test_threaded_client(url: str) -> None:
    k = key()
    with herald.Client(url) as hub:
        with pytest.raises(UnsafeCommand):
            hub.execute("MONITOR")
        with hub.pipeline(decode=True) as pipe:
            pipe.queue("SET", k, 1).queue("GET", k)
        assert pipe.replies == ["OK", "1"]
        with hub.transaction(watch=[k]) as tx:
            v = int(tx.execute("GET", k))
            tx.queue("SET", k, v + 1)
        assert tx.replies == [b"OK"]
        assert hub.script("return redis.call('GET', KEYS[1])")(keys=[k]) == b"2"
        hub.execute("RPUSH", k + "q", "a")
        assert hub.execute_blocking("BLPOP", k + "q", 1, decode=True) == [k + "q", "a"]
        assert hub.execute("GET", k, decode=True) == "2"


# -- Cluster and Sentinel ------------------------------------------------------------------------


async def test_cluster(cluster: LocalCluster) -> None:
    async with herald.AsyncClient(cluster.url) as hub, herald.AsyncClient(cluster.url) as other:
        a, b = "raw:{alice}:n", "raw:{bob}:n"
        tx = hub.transaction().queue("INCR", a).queue("INCR", b)
        with pytest.raises(CrossSlot):
            await tx.commit()
        with pytest.raises(CrossSlot):
            hub.transaction(watch=[a, b])._slot([])
        with pytest.raises(CrossSlot):
            await hub.script("return 1")(keys=[a, b])
        await hub.execute("DEL", a, "raw:{alice}:m")
        async with hub.transaction() as tx:
            tx.queue("INCR", a)
            tx.queue("INCRBY", "raw:{alice}:m", 5)
        assert tx.replies == [1, 5]
        async with hub.transaction(watch=[a]) as tx:
            n = int(await tx.execute("GET", a))
            tx.queue("SET", a, n + 10)
        assert await hub.execute("GET", a) == b"11"
        # A pipeline is not atomic: each command goes to its key's node.
        async with hub.pipeline() as pipe:
            pipe.queue("SET", a, "x").queue("SET", b, "y").queue("GET", a).queue("GET", b)
        assert pipe.replies == [b"OK", b"OK", b"x", b"y"]
        assert await hub.script("return redis.call('GET', KEYS[1])")(keys=[b]) == b"y"
        q = "raw:{queue}:jobs"
        waiting = asyncio.create_task(hub.execute_blocking("BLPOP", q, 5))
        await asyncio.sleep(0.1)
        await other.execute("RPUSH", q, "job")
        assert await asyncio.wait_for(waiting, 5) == [q.encode(), b"job"]


async def test_sentinel(sentinel: LocalSentinel) -> None:
    k = key()
    async with herald.AsyncClient(sentinel.url) as hub, herald.AsyncClient(sentinel.url) as other:
        async with hub.transaction(watch=[k]) as tx:
            await tx.execute("GET", k)
            tx.queue("SET", k, 1)
        assert await hub.execute("GET", k) == b"1"
        waiting = asyncio.create_task(hub.execute_blocking("BLPOP", k + "q", 5))
        await asyncio.sleep(0.1)
        await other.execute("RPUSH", k + "q", "job")
        assert await asyncio.wait_for(waiting, 5) == [(k + "q").encode(), b"job"]
