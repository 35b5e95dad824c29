"""Durable and request/reply workers of the comparison for NATS JetStream and RabbitMQ.

Durable publishers publish for ``duration`` seconds and then wait for every acknowledgement
(JetStream ``publish_async`` then ``publish_async_completed``; RabbitMQ publisher confirms with
64 publishes in flight, like Herald's confirmed-64 row). Consumers read a stream or queue that
the parent filled beforehand, ack every message, and report like the durable benchmark's
consumers (see :mod:`herald_bench._durable_workers`). Request/reply: one request in flight,
after a warm-up, the same way as the request benchmark (see :mod:`herald_bench.request`).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from ._durable_workers import FIRST_WAIT, IDLE, _consume_result, _pub_result
from ._harness import Barrier, Sample, Worker
from ._live_common import bytes_payload
from .request import WARMUP, _result

CONCURRENCY = 64
END = b"END"
monotonic = time.monotonic
perf_counter = time.perf_counter
perf_counter_ns = time.perf_counter_ns


# -- JetStream -----------------------------------------------------------------------------------


def js_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_js_pub(params, barrier))


async def _js_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import nats

    subject, payload = params["subject"], bytes_payload(params["payload_size"])
    nc = await nats.connect(params["nats_url"])
    try:
        js = nc.jetstream(publish_async_max_pending=4000)
        await (await js.publish_async(subject, payload))  # the reply inbox is set up
        publish_async = js.publish_async
        barrier.wait()
        sent = 0
        t0 = perf_counter()
        end = t0 + params["duration"]
        while True:
            for _ in range(64):
                await publish_async(subject, payload)
            sent += 64
            if perf_counter() >= end:
                break
        await asyncio.wait_for(js.publish_async_completed(), 60)
        return _pub_result(sent, t0, perf_counter())
    finally:
        await nc.close()


def js_consumer(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_js_consumer(params, barrier))


async def _js_consumer(params: dict[str, Any], barrier: Barrier) -> Sample:
    import nats
    import nats.errors

    duration = float(params["duration"])
    nc = await nats.connect(params["nats_url"])
    count = 0
    first = last = 0.0
    try:
        js = nc.jetstream()
        psub = await js.pull_subscribe_bind(durable=params["group"], stream=params["stream"])
        barrier.wait()
        t_start = monotonic()
        while True:
            try:
                msgs = await psub.fetch(100, timeout=FIRST_WAIT if not count else IDLE)
            except nats.errors.TimeoutError:
                break
            for m in msgs:
                await m.ack()
            now = monotonic()
            if not count:
                first = now
            count += len(msgs)
            last = now
            if now - first >= duration:
                break
        await nc.flush()
        if not count:
            raise TimeoutError(f"no message within {monotonic() - t_start:.0f}s")
        return _consume_result(count, first, last, acked=count)
    finally:
        await nc.close()


# -- RabbitMQ ------------------------------------------------------------------------------------


def pika_confirm_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_pika_confirm_pub(params, barrier))


async def _pika_confirm_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import aio_pika

    queue, payload = params["queue"], bytes_payload(params["payload_size"])
    connection = await aio_pika.connect(params["amqp_url"])
    try:
        channel = await connection.channel(publisher_confirms=True)
        publish = channel.default_exchange.publish
        message = aio_pika.Message
        await publish(message(payload), routing_key=queue)
        barrier.wait()
        t0 = perf_counter()
        end = t0 + params["duration"]

        async def loop() -> int:
            n = 0
            while perf_counter() < end:
                for _ in range(16):
                    await publish(message(payload), routing_key=queue)  # waits for the confirm
                n += 16
            return n

        sent = sum(await asyncio.gather(*(loop() for _ in range(CONCURRENCY))))
        return _pub_result(sent, t0, perf_counter())
    finally:
        await connection.close()


def pika_consumer(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_pika_consumer(params, barrier))


async def _pika_consumer(params: dict[str, Any], barrier: Barrier) -> Sample:
    import aio_pika

    duration = float(params["duration"])
    count = 0
    first = last = 0.0
    done = asyncio.get_running_loop().create_future()
    connection = await aio_pika.connect(params["amqp_url"])
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        queue = await channel.get_queue(params["queue"])

        async def handle(message: Any) -> None:
            nonlocal count, first, last
            await message.ack()
            now = monotonic()
            count += 1
            if count == 1:
                first = now
            last = now
            if now - first >= duration and not done.done():
                done.set_result(None)

        barrier.wait()
        t_start = monotonic()
        tag = await queue.consume(handle, consumer_tag=f"bench-{params['index']}-{os.getpid()}")
        seen = -1
        while not done.done() and seen != count:
            seen = count
            await asyncio.wait([done], timeout=FIRST_WAIT if not count else IDLE)
        await queue.cancel(tag)
        if not count:
            raise TimeoutError(f"no message within {monotonic() - t_start:.0f}s")
        return _consume_result(count, first, last, acked=count)
    finally:
        await connection.close()


# -- request/reply -------------------------------------------------------------------------------


async def _round_trips(barrier: Barrier, params: dict[str, Any], one: Any) -> Sample:
    barrier.wait()
    until = perf_counter() + WARMUP
    while perf_counter() < until:
        await one()
    lat: list[int] = []
    t0 = perf_counter()
    until = t0 + params["duration"]
    while perf_counter() < until:
        t = perf_counter_ns()
        await one()
        lat.append(perf_counter_ns() - t)
    return _result(len(lat), perf_counter() - t0, lat)


def nats_requester(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_nats_requester(params, barrier))


async def _nats_requester(params: dict[str, Any], barrier: Barrier) -> Sample:
    import nats

    subject, payload = params["topic"], bytes_payload(params["payload_size"])
    nc = await nats.connect(params["nats_url"])
    try:
        request = nc.request

        async def one() -> None:
            await request(subject, payload, timeout=5.0)

        result = await _round_trips(barrier, params, one)
        await nc.publish(subject, END)
        await nc.flush()
        return result
    finally:
        await nc.close()


def nats_responder(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_nats_responder(params, barrier))


async def _nats_responder(params: dict[str, Any], barrier: Barrier) -> Sample:
    import nats

    done = asyncio.get_running_loop().create_future()
    answered = 0
    nc = await nats.connect(params["nats_url"])
    try:

        async def answer(msg: Any) -> None:
            nonlocal answered
            if msg.data == END:
                if not done.done():
                    done.set_result(None)
                return
            answered += 1
            await msg.respond(msg.data)

        await nc.subscribe(params["topic"], cb=answer)
        await nc.flush()
        barrier.wait()
        await asyncio.wait_for(done, params["duration"] * 3 + 30)
        return {"answered": answered}
    finally:
        await nc.close()


def pika_requester(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_pika_requester(params, barrier))


async def _pika_requester(params: dict[str, Any], barrier: Barrier) -> Sample:
    import aio_pika

    payload = bytes_payload(params["payload_size"])
    connection = await aio_pika.connect(params["amqp_url"])
    try:
        channel = await connection.channel(publisher_confirms=False)
        replies = await channel.declare_queue(exclusive=True)
        waiting: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(message: Any) -> None:
            future = waiting.pop(message.correlation_id, None)
            if future is not None and not future.done():
                future.set_result(message.body)

        await replies.consume(on_reply, no_ack=True)
        publish = channel.default_exchange.publish
        loop = asyncio.get_running_loop()
        seq = 0

        async def one() -> None:
            nonlocal seq
            seq += 1
            cid = str(seq)
            future = waiting[cid] = loop.create_future()
            await publish(
                aio_pika.Message(payload, correlation_id=cid, reply_to=replies.name),
                routing_key=params["topic"],
            )
            await asyncio.wait_for(future, 5.0)

        result = await _round_trips(barrier, params, one)
        await publish(aio_pika.Message(END), routing_key=params["topic"])
        return result
    finally:
        await connection.close()


def pika_responder(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_pika_responder(params, barrier))


async def _pika_responder(params: dict[str, Any], barrier: Barrier) -> Sample:
    import aio_pika

    done = asyncio.get_running_loop().create_future()
    answered = 0
    connection = await aio_pika.connect(params["amqp_url"])
    try:
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue(params["topic"], auto_delete=True)
        publish = channel.default_exchange.publish

        async def answer(message: Any) -> None:
            nonlocal answered
            if message.body == END:
                if not done.done():
                    done.set_result(None)
                return
            answered += 1
            await publish(
                aio_pika.Message(message.body, correlation_id=message.correlation_id),
                routing_key=message.reply_to,
            )

        await queue.consume(answer, no_ack=True)
        barrier.wait()
        await asyncio.wait_for(done, params["duration"] * 3 + 30)
        return {"answered": answered}
    finally:
        await connection.close()


WORKERS: dict[str, Worker] = {
    "js-pub": js_pub,
    "js-consumer": js_consumer,
    "pika-confirm-pub": pika_confirm_pub,
    "pika-consumer": pika_consumer,
    "nats-requester": nats_requester,
    "nats-responder": nats_responder,
    "pika-requester": pika_requester,
    "pika-responder": pika_responder,
}
