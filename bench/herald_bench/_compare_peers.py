"""Live pub/sub workers of the comparison's other peers: FastStream (Redis channels),
broadcaster (Redis backend), nats-py (core NATS) and aio-pika (RabbitMQ, a fanout exchange).

The same contract as the live benchmark's workers (see :mod:`herald_bench._live_workers`):
``rate == 0`` publishes as fast as the library's publish API allows for ``duration`` seconds,
then a 3-byte end marker; ``rate > 0`` paces bursts of stamped payloads. Each subscriber counts
from its first message to the end marker (or ``duration`` seconds of receiving). Every library
is used the way its documentation shows, with its logging at warnings.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any, cast

from ._harness import Barrier, Sample
from ._live_common import (
    END,
    WARMUP_FRACTION,
    bytes_payload,
    json_payload,
    limit,
    monotonic_ns,
    paced_async,
    perf_counter,
    pub_result,
    run_loop,
    stamped_bytes,
    sub_result,
)


def quiet_logger() -> logging.Logger:
    logger = logging.getLogger("herald.bench.peer")
    logger.setLevel(logging.WARNING)
    return logger


class Counter:
    """Counts messages for a throughput or latency subscriber; ``done`` resolves at the end.

    One small object shared by the peers whose own dispatch costs far more per message than
    this method call (tens of microseconds and up); Herald, redis-py and raw keep their
    hand-written loops in the live benchmark.
    """

    def __init__(self, params: dict[str, Any]) -> None:
        self.duration = float(params["duration"])
        self.latency = bool(params["rate"])
        self.warm_ns = int(self.duration * WARMUP_FRACTION * 1e9)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.n = 0
        self.first = self.last = 0.0
        self.stop_at = math.inf
        self.floor = 0
        self.lat: list[int] = []

    def bytes(self, data: bytes) -> None:
        """One message whose payload is raw bytes (stamped in latency mode)."""
        if self.done.done():
            return
        if len(data) == 3:
            self.finish()
            return
        if self.latency:
            now = monotonic_ns()
            t = int(data[:19])
            if self.n == 0:
                self.first = perf_counter()
                self.floor = t + self.warm_ns
            self.n += 1
            if t >= self.floor:
                self.lat.append(now - t)
            return
        self.tick()

    def tick(self) -> None:
        self.n += 1
        if self.n == 1:
            self.first = perf_counter()
            self.stop_at = self.first + self.duration
        elif self.n & 255 == 0 and perf_counter() >= self.stop_at:
            self.finish()

    def finish(self) -> None:
        if not self.done.done():
            self.last = perf_counter()
            self.done.set_result(None)

    async def wait(self, params: dict[str, Any]) -> Sample:
        try:
            await asyncio.wait_for(asyncio.shield(self.done), limit(params))
        except TimeoutError:
            self.finish()
        return sub_result(self.n, self.first, self.last, self.lat if self.latency else None)


async def _publish_loop(
    params: dict[str, Any],
    publish: Callable[[Any], Any],
    payload: Any,
    stamped: Callable[[], Any],
    end: Any,
) -> Sample:
    """Publish for ``duration`` (or paced), then the end marker; ``publish`` is awaited."""
    if params["rate"]:

        async def burst(k: int) -> None:
            for _ in range(k):
                await publish(stamped())

        result = await paced_async(params, burst)
        await publish(end)
        return result
    sent = 0
    t0 = perf_counter()
    stop = t0 + params["duration"]
    while True:
        for _ in range(64):
            await publish(payload)
        sent += 64
        if perf_counter() >= stop:
            break
    await publish(end)
    return pub_result(sent, t0, perf_counter())


# -- FastStream (Redis channel) ------------------------------------------------------------------


def faststream_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_faststream_pub(params, barrier))


async def _faststream_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    from faststream.redis import RedisBroker

    channel = params["channel"]
    broker = RedisBroker(params["url"], logger=quiet_logger())
    await broker.connect()
    try:

        async def publish(data: Any) -> None:
            await broker.publish(data, channel=channel)

        size = params["payload_size"]
        barrier.wait()
        # FastStream encodes a dict as JSON; stamped payloads go as bytes (decoded back as bytes).
        return await _publish_loop(
            params, publish, json_payload(size), stamped_bytes(size), END.decode()
        )
    finally:
        await broker.stop()


def faststream_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_faststream_sub(params, barrier))


async def _faststream_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    from faststream.redis import RedisBroker

    counter = Counter(params)
    broker = RedisBroker(params["url"], logger=quiet_logger())

    async def handle(body: Any) -> None:
        if body.__class__ is dict:
            counter.tick()
        elif isinstance(body, bytes):
            counter.bytes(body)
        else:  # the end marker, a str
            counter.finish()

    cast(Any, broker).subscriber(channel=params["channel"])(handle)

    await broker.start()
    await asyncio.sleep(0.2)  # start() returns before its SUBSCRIBE is confirmed
    try:
        barrier.wait()
        return await counter.wait(params)
    finally:
        await broker.stop()


# -- broadcaster (Redis backend) -----------------------------------------------------------------


def broadcaster_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_broadcaster_pub(params, barrier))


async def _broadcaster_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    from broadcaster import Broadcast

    channel = params["channel"]
    async with Broadcast(params["url"]) as broadcast:

        async def publish(data: str) -> None:
            await broadcast.publish(channel=channel, message=data)

        size = params["payload_size"]
        stamped = stamped_bytes(size)
        barrier.wait()
        return await _publish_loop(
            params, publish, "x" * size, lambda: stamped().decode(), END.decode()
        )


def broadcaster_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_broadcaster_sub(params, barrier))


async def _broadcaster_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    from broadcaster import Broadcast

    counter = Counter(params)
    async with (
        Broadcast(params["url"]) as broadcast,
        broadcast.subscribe(channel=params["channel"]) as subscriber,
    ):
        if params.get("broadcaster_fix"):
            _wake_broadcaster(broadcast)
        await asyncio.sleep(0.2)
        events: Any = subscriber

        async def consume() -> None:
            async for event in events:
                counter.bytes(event.message.encode())
                if counter.done.done():
                    return

        task = asyncio.get_running_loop().create_task(consume())
        barrier.wait()
        try:
            return await counter.wait(params)
        finally:
            task.cancel()


def _wake_broadcaster(broadcast: Any) -> None:
    """Work around broadcaster 0.3.1 with redis-py >= 5: its listener task may run
    ``listen()`` before the SUBSCRIBE is confirmed, see no channel, and wait forever; setting
    its ready event again once subscribed restarts it."""
    ready = getattr(getattr(broadcast, "_backend", None), "_ready", None)
    if ready is not None:
        ready.set()


# -- nats-py (core NATS) -------------------------------------------------------------------------


def nats_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_nats_pub(params, barrier))


async def _nats_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import nats

    subject = params["channel"]
    nc = await nats.connect(params["nats_url"])
    try:
        await nc.flush()
        publish = nc.publish
        size = params["payload_size"]
        barrier.wait()
        if params["rate"]:
            stamped = stamped_bytes(size)

            async def burst(k: int) -> None:
                for _ in range(k):
                    await publish(subject, stamped())
                await nc.flush()  # nats-py flushes in the background; a burst goes now

            result = await paced_async(params, burst)
        else:
            payload = bytes_payload(size)
            sent = 0
            t0 = perf_counter()
            stop = t0 + params["duration"]
            while True:
                for _ in range(256):
                    await publish(subject, payload)
                sent += 256
                if perf_counter() >= stop:
                    break
            await nc.flush(timeout=60)
            result = pub_result(sent, t0, perf_counter())
        await publish(subject, END)
        await nc.flush(timeout=60)
        return result
    finally:
        await nc.close()


def nats_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_nats_sub(params, barrier))


async def _nats_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import nats

    counter = Counter(params)
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(type(exc).__name__)

    nc = await nats.connect(params["nats_url"], error_cb=on_error)
    try:
        on_bytes = counter.bytes

        async def handle(msg: Any) -> None:
            on_bytes(msg.data)

        await nc.subscribe(params["channel"], cb=handle)
        await nc.flush()
        barrier.wait()
        result = await counter.wait(params)
        if errors:
            result["client_errors"] = sorted(set(errors))
        return result
    finally:
        await nc.close()


# -- aio-pika (RabbitMQ, a fanout exchange, auto-ack) ---------------------------------------------


def pika_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_pika_pub(params, barrier))


async def _pika_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import aio_pika

    connection = await aio_pika.connect(params["amqp_url"])
    try:
        channel = await connection.channel(publisher_confirms=False)
        exchange = await channel.declare_exchange(params["channel"], aio_pika.ExchangeType.FANOUT)
        publish = exchange.publish
        message = aio_pika.Message

        async def send(body: bytes) -> None:
            await publish(message(body), routing_key="")

        size = params["payload_size"]
        barrier.wait()
        try:
            return await _publish_loop(params, send, bytes_payload(size), stamped_bytes(size), END)
        finally:
            await exchange.delete()  # the queues bound to it keep what they hold
    finally:
        await connection.close()


def pika_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_pika_sub(params, barrier))


async def _pika_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import aio_pika

    counter = Counter(params)
    connection = await aio_pika.connect(params["amqp_url"])
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(params["channel"], aio_pika.ExchangeType.FANOUT)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange)
        on_bytes = counter.bytes

        async def handle(message: Any) -> None:
            on_bytes(message.body)

        await queue.consume(handle, no_ack=True)
        barrier.wait()
        return await counter.wait(params)
    finally:
        await connection.close()
