"""Fan-out workers of the comparison: one publisher, many subscribers of one channel.

Every subscriber is its own connection (its own client object), as separate services would be;
the parent spreads ``subscribers`` connections over two subscriber processes
(``params["conns"]`` each). The publisher publishes ``count`` messages as fast as its library
allows, then the 3-byte end marker; ``count`` is fixed (not a duration) so that the server's
output buffers stay bounded when subscribers fall behind. A subscriber process counts every
delivery on all its connections from the first to the last end marker (or for ``duration``
seconds after the first delivery) and reports them with the times of the first and the last,
on the same clock as the other process, so that the parent can add them up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from ._harness import Barrier, Sample
from ._live_common import BATCH, END, bytes_payload, json_payload, publish_command, run_loop

monotonic = time.monotonic


class FanCounter:
    """Deliveries of all of one process's connections."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.conns = int(params["conns"])
        self.duration = float(params["duration"])
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.n = self.ends = 0
        self.first = self.last = 0.0

    def tick(self) -> None:
        self.n += 1
        if self.n == 1:
            self.first = monotonic()
        elif self.n & 1023 == 0 and monotonic() - self.first >= self.duration:
            self.finish()

    def end(self) -> None:
        self.ends += 1
        if self.ends >= self.conns:
            self.finish()

    def bytes(self, data: bytes) -> None:
        if len(data) == 3:
            self.end()
        else:
            self.tick()

    def finish(self) -> None:
        if not self.done.done():
            self.last = monotonic()
            self.done.set_result(None)

    async def wait(self, params: dict[str, Any]) -> Sample:
        try:
            await asyncio.wait_for(asyncio.shield(self.done), float(params["duration"]) * 3 + 30)
        except TimeoutError:
            self.finish()
        return {
            "received": self.n,
            "ends": self.ends,
            "first": self.first,
            "last": self.last,
            "connections": self.conns,
        }


def _run(coro: Callable[[dict[str, Any], Barrier], Coroutine[Any, Any, Sample]]) -> Any:
    def worker(params: dict[str, Any], barrier: Barrier) -> Sample:
        return run_loop(coro(params, barrier))

    return worker


async def _timed(count: int, publish: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    t0 = monotonic()
    for _ in range(count):
        await publish()
    return t0, monotonic()


def _pub_result(count: int, t0: float, t1: float) -> Sample:
    return {"sent": count, "seconds": t1 - t0, "rate": count / (t1 - t0) if t1 > t0 else None}


# -- Herald --------------------------------------------------------------------------------------


async def _herald_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import herald

    channel, data = params["channel"], json_payload(params["payload_size"])
    async with herald.AsyncClient(params["url"]) as hub:
        await hub.execute("PING")
        publish = hub.publish
        barrier.wait()
        t0 = monotonic()
        for _ in range(params["count"]):
            await publish(channel, data)
        await hub.flush(timeout=60)
        t1 = monotonic()
        await publish(channel, "END")
        await hub.flush()
        return _pub_result(params["count"], t0, t1)


async def _herald_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import herald

    counter = FanCounter(params)
    tick, end = counter.tick, counter.end

    def handle(msg: herald.Message) -> None:
        if msg.data.__class__ is dict:
            tick()
        else:
            end()

    hubs = [herald.AsyncClient(params["url"]) for _ in range(counter.conns)]
    try:
        for hub in hubs:
            await hub.connect()
            await hub.subscribe(params["channel"], handler=handle)
        barrier.wait()
        return await counter.wait(params)
    finally:
        await asyncio.gather(*(hub.close() for hub in hubs), return_exceptions=True)


# -- redis-py asyncio ----------------------------------------------------------------------------


async def _redispy_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import redis.asyncio

    channel, payload = params["channel"], bytes_payload(params["payload_size"])
    r = redis.asyncio.Redis.from_url(params["url"])
    try:
        await r.ping()
        pipe = r.pipeline(transaction=False)
        barrier.wait()
        t0 = monotonic()
        left = params["count"]
        while left > 0:
            for _ in range(min(BATCH, left)):
                pipe.publish(channel, payload)
            await pipe.execute()
            left -= BATCH
        t1 = monotonic()
        await r.publish(channel, END)
        return _pub_result(params["count"], t0, t1)
    finally:
        await r.aclose()


async def _redispy_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import redis.asyncio

    counter = FanCounter(params)
    clients = [redis.asyncio.Redis.from_url(params["url"]) for _ in range(counter.conns)]
    pubsubs = [c.pubsub() for c in clients]
    on_bytes = counter.bytes

    async def listen(ps: Any) -> None:
        async for m in ps.listen():
            if m["type"] == "message":
                on_bytes(m["data"])

    for ps in pubsubs:
        await ps.subscribe(params["channel"])
        await ps.get_message(timeout=5.0)
    tasks = [asyncio.get_running_loop().create_task(listen(ps)) for ps in pubsubs]
    barrier.wait()
    try:
        return await counter.wait(params)
    finally:
        for t in tasks:
            t.cancel()


# -- FastStream ----------------------------------------------------------------------------------


async def _faststream_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    from faststream.redis import RedisBroker

    from ._compare_peers import quiet_logger

    channel, data = params["channel"], json_payload(params["payload_size"])
    broker = RedisBroker(params["url"], logger=quiet_logger())
    await broker.connect()
    try:
        barrier.wait()
        t0, t1 = await _timed(
            params["count"], lambda: broker.publish(cast(Any, data), channel=channel)
        )
        await broker.publish("END", channel=channel)
        return _pub_result(params["count"], t0, t1)
    finally:
        await broker.stop()


async def _faststream_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    from faststream.redis import RedisBroker

    from ._compare_peers import quiet_logger

    counter = FanCounter(params)
    brokers = []
    for _ in range(counter.conns):
        broker = RedisBroker(params["url"], logger=quiet_logger())

        async def handle(body: Any) -> None:
            if body.__class__ is dict:
                counter.tick()
            else:
                counter.end()

        cast(Any, broker).subscriber(channel=params["channel"])(handle)

        await broker.start()
        brokers.append(broker)
    await asyncio.sleep(0.3)
    barrier.wait()
    try:
        return await counter.wait(params)
    finally:
        for broker in brokers:
            await broker.stop()


# -- broadcaster ---------------------------------------------------------------------------------


async def _broadcaster_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    from broadcaster import Broadcast

    channel, data = params["channel"], "x" * params["payload_size"]
    async with Broadcast(params["url"]) as b:
        barrier.wait()
        t0, t1 = await _timed(params["count"], lambda: b.publish(channel=channel, message=data))
        await b.publish(channel=channel, message="END")
        return _pub_result(params["count"], t0, t1)


async def _broadcaster_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    from broadcaster import Broadcast

    from ._compare_peers import _wake_broadcaster

    counter = FanCounter(params)
    on_bytes = counter.bytes
    broadcasts = [Broadcast(params["url"]) for _ in range(counter.conns)]
    tasks = []

    async def follow(b: Broadcast, ready: asyncio.Event) -> None:
        async with b.subscribe(channel=params["channel"]) as subscriber:
            _wake_broadcaster(b)
            ready.set()
            events: Any = subscriber
            async for event in events:
                on_bytes(event.message.encode())

    for b in broadcasts:
        await b.connect()
        ready = asyncio.Event()
        tasks.append(asyncio.get_running_loop().create_task(follow(b, ready)))
        await ready.wait()
    await asyncio.sleep(0.3)
    barrier.wait()
    try:
        return await counter.wait(params)
    finally:
        for t in tasks:
            t.cancel()


# -- nats-py -------------------------------------------------------------------------------------


async def _nats_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import nats

    subject, payload = params["channel"], bytes_payload(params["payload_size"])
    nc = await nats.connect(params["nats_url"])
    try:
        await nc.flush()
        barrier.wait()
        t0, _ = await _timed(params["count"], lambda: nc.publish(subject, payload))
        await nc.flush(timeout=60)
        t1 = monotonic()
        await nc.publish(subject, END)
        await nc.flush(timeout=60)
        return _pub_result(params["count"], t0, t1)
    finally:
        await nc.close()


async def _nats_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import nats

    counter = FanCounter(params)
    on_bytes = counter.bytes
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(type(exc).__name__)

    async def handle(msg: Any) -> None:
        on_bytes(msg.data)

    conns = []
    for _ in range(counter.conns):
        nc = await nats.connect(params["nats_url"], error_cb=on_error)
        await nc.subscribe(params["channel"], cb=handle)
        await nc.flush()
        conns.append(nc)
    barrier.wait()
    try:
        result = await counter.wait(params)
        if errors:
            result["client_errors"] = sorted(set(errors))
        return result
    finally:
        for nc in conns:
            await nc.close()


# -- aio-pika ------------------------------------------------------------------------------------


async def _pika_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import aio_pika

    payload = bytes_payload(params["payload_size"])
    connection = await aio_pika.connect(params["amqp_url"])
    try:
        channel = await connection.channel(publisher_confirms=False)
        exchange = await channel.declare_exchange(params["channel"], aio_pika.ExchangeType.FANOUT)
        message = aio_pika.Message
        barrier.wait()
        t0, t1 = await _timed(
            params["count"], lambda: exchange.publish(message(payload), routing_key="")
        )
        await exchange.publish(message(END), routing_key="")
        await exchange.delete()  # the queues bound to it keep what they hold
        return _pub_result(params["count"], t0, t1)
    finally:
        await connection.close()


async def _pika_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import aio_pika

    counter = FanCounter(params)
    on_bytes = counter.bytes

    async def handle(message: Any) -> None:
        on_bytes(message.body)

    connections = []
    for _ in range(counter.conns):
        connection = await aio_pika.connect(params["amqp_url"])
        channel = await connection.channel()
        exchange = await channel.declare_exchange(params["channel"], aio_pika.ExchangeType.FANOUT)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange)
        await queue.consume(handle, no_ack=True)
        connections.append(connection)
    barrier.wait()
    try:
        return await counter.wait(params)
    finally:
        for connection in connections:
            await connection.close()


# -- raw -----------------------------------------------------------------------------------------


def raw_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import socket

    channel = params["channel"]
    sock = socket.create_connection((params["host"], params["port"]))
    try:
        cmd = publish_command(channel, bytes_payload(params["payload_size"]))
        barrier.wait()
        t0 = monotonic()
        left = params["count"]
        while left > 0:
            k = min(BATCH, left)
            sock.sendall(cmd * k)
            got = 0
            while got < k:  # one integer reply per PUBLISH
                data = sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("server closed the connection")
                got += data.count(b"\n")
            left -= k
        t1 = monotonic()
        sock.sendall(publish_command(channel, END))
        sock.recv(1 << 10)
        return _pub_result(params["count"], t0, t1)
    finally:
        sock.close()


async def _raw_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import hiredis

    counter = FanCounter(params)
    tick, end = counter.tick, counter.end
    channel = params["channel"].encode()

    class Proto(asyncio.Protocol):
        def __init__(self) -> None:
            self.reader = hiredis.Reader()
            self.ready = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            transport.write(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(channel), channel))

        def data_received(self, data: bytes) -> None:
            reader = self.reader
            reader.feed(data)
            reply = reader.gets()
            while reply is not False:
                if reply[0] == b"message":
                    if len(reply[2]) == 3:
                        end()
                    else:
                        tick()
                elif not self.ready.done():
                    self.ready.set_result(None)
                reply = reader.gets()

    loop = asyncio.get_running_loop()
    transports = []
    for _ in range(counter.conns):
        transport, proto = await loop.create_connection(Proto, params["host"], params["port"])
        await asyncio.wait_for(proto.ready, 5.0)
        transports.append(transport)
    barrier.wait()
    try:
        return await counter.wait(params)
    finally:
        for t in transports:
            t.close()


WORKERS: dict[str, Any] = {
    "herald-pub": _run(_herald_pub),
    "herald-sub": _run(_herald_sub),
    "redispy-pub": _run(_redispy_pub),
    "redispy-sub": _run(_redispy_sub),
    "faststream-pub": _run(_faststream_pub),
    "faststream-sub": _run(_faststream_sub),
    "broadcaster-pub": _run(_broadcaster_pub),
    "broadcaster-sub": _run(_broadcaster_sub),
    "nats-pub": _run(_nats_pub),
    "nats-sub": _run(_nats_sub),
    "pika-pub": _run(_pika_pub),
    "pika-sub": _run(_pika_sub),
    "raw-pub": raw_pub,
    "raw-sub": _run(_raw_sub),
}
