"""The live benchmark's Herald workers: AsyncClient and Client publishers, subscribers."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from ._harness import Barrier, Sample
from ._live_common import (
    WARMUP_FRACTION,
    json_payload,
    limit,
    monotonic_ns,
    paced_async,
    perf_counter,
    pub_result,
    run_loop,
    stamped_json,
    sub_result,
)

# -- Herald --------------------------------------------------------------------------------------


def herald_async_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_herald_async_pub(params, barrier, batch=True))


def herald_async_nobatch_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_herald_async_pub(params, barrier, batch=False))


async def _herald_async_pub(params: dict[str, Any], barrier: Barrier, *, batch: bool) -> Sample:
    import herald

    channel = params["channel"]
    async with herald.AsyncClient(params["url"], batch=batch) as hub:
        await hub.execute("PING")
        publish = hub.publish
        barrier.wait()
        if params["rate"]:
            stamped = stamped_json(params["payload_size"])

            async def burst(k: int) -> None:
                for _ in range(k):
                    await publish(channel, stamped())

            result = await paced_async(params, burst)
            await publish(channel, "END")
            await hub.flush()
            return result
        data = json_payload(params["payload_size"])
        sent = 0
        t0 = perf_counter()
        end = t0 + params["duration"]
        while True:
            for _ in range(256):
                await publish(channel, data)
            sent += 256
            if perf_counter() >= end:
                break
        await publish(channel, "END")
        await hub.flush()
        return pub_result(sent, t0, perf_counter(), errors=hub.stats.publish_errors)


def herald_many_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_herald_many_pub(params, barrier))


async def _herald_many_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import herald

    channel = params["channel"]
    async with herald.AsyncClient(params["url"]) as hub:
        await hub.execute("PING")
        items = [json_payload(params["payload_size"])] * 1000
        barrier.wait()
        sent = 0
        t0 = perf_counter()
        end = t0 + params["duration"]
        while True:
            await hub.publish_many(channel, items)
            sent += len(items)
            if perf_counter() >= end:
                break
        await hub.publish(channel, "END")
        await hub.flush()
        return pub_result(sent, t0, perf_counter(), errors=hub.stats.publish_errors)


def herald_sync_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import herald

    channel = params["channel"]
    with herald.Client(params["url"]) as hub:
        hub.execute("PING")
        publish = hub.publish
        data = json_payload(params["payload_size"])
        barrier.wait()
        sent = 0
        t0 = perf_counter()
        end = t0 + params["duration"]
        while True:
            for _ in range(256):
                publish(channel, data)
            sent += 256
            if perf_counter() >= end:
                break
        publish(channel, "END")
        hub.flush()
        return pub_result(sent, t0, perf_counter(), errors=hub.stats.publish_errors)


def herald_handler_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_herald_sub(params, barrier, iterate=False))


def herald_iter_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_herald_sub(params, barrier, iterate=True))


async def _herald_sub(params: dict[str, Any], barrier: Barrier, *, iterate: bool) -> Sample:
    import herald

    duration = float(params["duration"])
    latency = bool(params["rate"])
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    n = final = 0
    first = last = 0.0
    stop_at = math.inf
    lat: list[int] = []
    floor = 0
    warm_ns = int(duration * WARMUP_FRACTION * 1e9)

    def finish() -> None:
        nonlocal last, final
        if not done.done():
            last, final = perf_counter(), n
            done.set_result(None)

    def count(msg: herald.Message) -> None:
        nonlocal n, first, stop_at
        if msg.data.__class__ is not dict:
            finish()
            return
        n += 1
        if n & 1023 == 0:
            if perf_counter() >= stop_at:
                finish()
        elif n == 1:
            first = perf_counter()
            stop_at = first + duration

    def measure(msg: herald.Message) -> None:
        nonlocal n, first, floor
        now = monotonic_ns()
        data = msg.data
        if data.__class__ is not dict:
            finish()
            return
        t = data["t"]
        if n == 0:
            first = perf_counter()
            floor = t + warm_ns
        n += 1
        if t >= floor:
            lat.append(now - t)

    handler = measure if latency else count
    async with herald.AsyncClient(params["url"]) as hub:
        if iterate:
            sub = await hub.subscribe(params["channel"])

            async def consume() -> None:
                async for msg in sub:
                    handler(msg)
                    if done.done():
                        return

            task = loop.create_task(consume())
        else:
            sub = await hub.subscribe(params["channel"], handler=handler)
        barrier.wait()
        try:
            await asyncio.wait_for(asyncio.shield(done), limit(params))
        except TimeoutError:
            finish()
        stats = sub.stats
        if iterate:
            task.cancel()
        return sub_result(
            final,
            first,
            last,
            lat if latency else None,
            dropped=stats.dropped,
            handler_errors=stats.handler_errors,
        )
