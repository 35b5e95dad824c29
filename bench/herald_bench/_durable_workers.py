"""Publishers and consumers of the durable benchmark, one function per client, run in workers.

Every worker gets ``params`` (``url``, ``key`` or ``topic``, ``group``, ``duration``,
``payload_size``, ``index``) and the barrier, and starts its clock when the barrier opens.

- **Publishers** publish for ``duration`` seconds as fast as their API allows, then wait until
  the server has answered everything (a flush); rate = messages / that time.
- **Consumers** read a stream the parent filled before the barrier (a backlog larger than they
  can drain in ``duration``, except when they are faster than expected), in a consumer group
  created at its start, and ack every message. Each reports how many messages its handler got
  and when the first and the last arrived (``time.monotonic()``, the same clock in every
  process); a consumer stops ``duration`` seconds after its first message, or once the backlog
  is drained (nothing for :data:`IDLE` seconds). The parent sums the counts of all consumers of
  a run and divides by (latest last - earliest first).

The hot loops are written out per client, as in the live benchmark.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any, cast

from ._harness import Barrier, Sample, Worker, rate
from ._live_common import run_loop

IDLE = 0.5  # a consumer that got nothing for this long after its first message has drained
FIRST_WAIT = 30.0  # the first message must arrive within this long
CONCURRENCY = 64  # tasks of the concurrent confirmed-publish row
BATCH = 1000  # publish_many and pipelines
monotonic = time.monotonic
perf_counter = time.perf_counter


def json_payload(size: int) -> dict[str, str]:
    """A dict whose JSON encoding is ``size`` bytes (what a Herald user publishes)."""
    return {"p": "x" * max(size - 8, 1)}


def _pub_result(sent: int, t0: float, t1: float, **extra: Any) -> Sample:
    return {"sent": sent, "seconds": t1 - t0, "rate": rate(sent, t1 - t0), **extra}


def _consume_result(count: int, first: float, last: float, **extra: Any) -> Sample:
    return {
        "received": count,
        "first": first,
        "last": last,
        "seconds": last - first if count else 0.0,
        "rate": rate(count, last - first) if count > 1 else None,
        **extra,
    }


# -- Herald publishers -------------------------------------------------------------------------


def herald_confirmed_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_herald_pub(params, barrier, "confirmed"))


def herald_concurrent_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_herald_pub(params, barrier, "concurrent"))


def herald_fsync_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_herald_pub(params, barrier, "concurrent", fsync=True))


def herald_ff_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_herald_pub(params, barrier, "ff"))


def herald_many_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_herald_pub(params, barrier, "many"))


async def _herald_pub(
    params: dict[str, Any], barrier: Barrier, mode: str, fsync: bool = False
) -> Sample:
    import herald

    topic = params["topic"]
    data = json_payload(params["payload_size"])
    async with herald.AsyncClient(params["url"]) as hub:
        await hub.publish(topic, data)  # the topic's policy is loaded: it is durable
        publish = hub.publish
        barrier.wait()
        sent = 0
        t0 = perf_counter()
        end = t0 + params["duration"]
        if mode == "confirmed":
            while True:
                for _ in range(64):
                    await publish(topic, data)  # durable: waits for the server's reply
                sent += 64
                if perf_counter() >= end:
                    break
        elif mode == "concurrent":

            async def loop() -> int:
                n = 0
                while perf_counter() < end:
                    for _ in range(16):
                        await publish(topic, data, fsync=fsync)
                    n += 16
                return n

            sent = sum(await asyncio.gather(*(loop() for _ in range(CONCURRENCY))))
        elif mode == "ff":
            while True:
                for _ in range(64):
                    await publish(topic, data, confirm=False)
                sent += 64
                if perf_counter() >= end:
                    break
        else:
            items = [data] * BATCH
            publish_many = hub.publish_many
            while perf_counter() < end:
                await publish_many(topic, items)
                sent += BATCH
        await hub.flush(timeout=60.0)
        t1 = perf_counter()
        return _pub_result(sent, t0, t1, publish_errors=hub.stats.publish_errors)


# -- redis-py publishers -----------------------------------------------------------------------


def redispy_xadd_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return _redispy_pub(params, barrier, pipeline=False)


def redispy_xadd_pipe_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return _redispy_pub(params, barrier, pipeline=True)


def _redispy_pub(params: dict[str, Any], barrier: Barrier, *, pipeline: bool) -> Sample:
    import redis

    key = params["key"]
    fields = {"m": b"x" * params["payload_size"]}
    r = redis.Redis.from_url(params["url"])
    try:
        r.ping()
        barrier.wait()
        sent = 0
        t0 = perf_counter()
        end = t0 + params["duration"]
        if pipeline:
            pipe = r.pipeline(transaction=False)
            while perf_counter() < end:
                for _ in range(BATCH):
                    pipe.xadd(key, fields)  # type: ignore[arg-type]
                pipe.execute()
                sent += BATCH
        else:
            xadd = r.xadd
            while True:
                for _ in range(64):
                    xadd(key, fields)  # type: ignore[arg-type]
                sent += 64
                if perf_counter() >= end:
                    break
        return _pub_result(sent, t0, perf_counter())
    finally:
        r.close()


# -- Herald consumers --------------------------------------------------------------------------


def herald_handler_consumer(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_herald_consumer(params, barrier, iterate=False))


def herald_iter_consumer(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_herald_consumer(params, barrier, iterate=True))


async def _herald_consumer(params: dict[str, Any], barrier: Barrier, *, iterate: bool) -> Sample:
    import herald

    count = 0
    first = last = 0.0
    duration = float(params["duration"])
    name = f"bench-{params['index']}-{os.getpid()}"
    async with herald.AsyncClient(params["url"]) as hub:
        await hub.topics()
        barrier.wait()
        t_start = monotonic()
        if iterate:
            consumer = hub.consume(params["topic"], params["group"], name)
            watchdog = asyncio.get_running_loop().create_task(
                _close_when_idle(consumer, lambda: count)
            )
            async with consumer:
                async for _ in consumer:  # acks the previous message
                    now = monotonic()
                    count += 1
                    if count == 1:
                        first = now
                    last = now
                    if now - first >= duration:
                        break
            watchdog.cancel()
            stats = consumer.stats
        else:
            done = asyncio.get_running_loop().create_future()

            def handle(msg: herald.DurableMessage) -> None:
                nonlocal count, first, last
                now = monotonic()
                count += 1
                if count == 1:
                    first = now
                last = now
                if now - first >= duration and not done.done():
                    done.set_result(None)

            consumer = await hub.consume(params["topic"], params["group"], name, handler=handle)
            await _until_idle(lambda: count, done)
            await consumer.close()  # sends the last acks
            stats = consumer.stats
        if not count:
            raise TimeoutError(f"no message within {monotonic() - t_start:.0f}s")
        return _consume_result(count, first, last, acked=stats.acked)


async def _until_idle(count: Callable[[], int], done: asyncio.Future[None] | None = None) -> None:
    """Return once ``count()`` stopped growing for :data:`IDLE` seconds (the backlog is
    drained), or stayed 0 for :data:`FIRST_WAIT`, or ``done`` is done."""
    done = done or asyncio.get_running_loop().create_future()
    start = monotonic()
    seen = -1
    while not done.done():
        n = count()
        if n == seen or (not n and monotonic() - start > FIRST_WAIT):
            return
        if n:
            seen = n
        await asyncio.wait([done], timeout=IDLE)


async def _close_when_idle(consumer: Any, count: Callable[[], int]) -> None:
    await _until_idle(count)
    await consumer.close()


# -- redis-py consumer -------------------------------------------------------------------------


def redispy_consumer(params: dict[str, Any], barrier: Barrier) -> Sample:
    import redis

    key, group = params["key"], params["group"]
    name = f"bench-{params['index']}-{os.getpid()}"
    duration = float(params["duration"])
    r = redis.Redis.from_url(params["url"])
    count = acked = 0
    first = last = 0.0
    try:
        r.ping()
        barrier.wait()
        t_start = monotonic()
        while True:
            block = int((FIRST_WAIT if not count else IDLE) * 1000)
            reply: Any = r.xreadgroup(group, name, {key: ">"}, count=100, block=block)
            if not reply:
                break
            ids = []
            for entry_id, fields in reply[0][1]:
                fields[b"m"]  # what a handler would look at
                ids.append(entry_id)
            now = monotonic()
            if not count:
                first = now
            count += len(ids)
            last = now
            acked += int(cast(Any, r.xack(key, group, *ids)))
            if now - first >= duration:
                break
        if not count:
            raise TimeoutError(f"no message within {monotonic() - t_start:.0f}s")
        return _consume_result(count, first, last, acked=acked)
    finally:
        r.close()


# -- FastStream consumer -----------------------------------------------------------------------


def faststream_consumer(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_faststream_consumer(params, barrier))


async def _faststream_consumer(params: dict[str, Any], barrier: Barrier) -> Sample:
    from faststream.redis import RedisBroker, StreamSub

    count = 0
    first = last = 0.0
    duration = float(params["duration"])
    done = asyncio.get_running_loop().create_future()
    # Its logs (by default two lines per message) off, as in production: warnings only.
    quiet = logging.getLogger("herald.bench.faststream")
    quiet.setLevel(logging.WARNING)
    broker = RedisBroker(params["url"], logger=quiet)
    sub = StreamSub(
        params["key"],
        group=params["group"],
        consumer=f"bench-{params['index']}-{os.getpid()}",
        max_records=params.get("faststream_count"),  # None: its default, no COUNT
    )

    @broker.subscriber(stream=sub)
    async def handle(body: dict[str, Any]) -> None:
        nonlocal count, first, last
        now = monotonic()
        count += 1
        if count == 1:
            first = now
        last = now
        if now - first >= duration and not done.done():
            done.set_result(None)

    await broker.connect()
    barrier.wait()
    t_start = monotonic()
    await broker.start()  # acks each message after its handler returns (FastStream's default)
    try:
        seen = -1
        while not done.done() and seen != count:
            seen = count
            await asyncio.wait([done], timeout=FIRST_WAIT if not count else IDLE)
    finally:
        await broker.stop()
    if not count:
        raise TimeoutError(f"no message within {monotonic() - t_start:.0f}s")
    return _consume_result(count, first, last)


WORKERS: dict[str, Worker] = {
    "herald-confirmed": herald_confirmed_pub,
    "herald-concurrent": herald_concurrent_pub,
    "herald-fsync": herald_fsync_pub,
    "herald-ff": herald_ff_pub,
    "herald-many": herald_many_pub,
    "redispy-xadd": redispy_xadd_pub,
    "redispy-xadd-pipe": redispy_xadd_pipe_pub,
    "herald-handler": herald_handler_consumer,
    "herald-iter": herald_iter_consumer,
    "redispy-consumer": redispy_consumer,
    "faststream-consumer": faststream_consumer,
}
