"""The live benchmark's peers: redis-py (asyncio and sync) and a raw hiredis client."""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Any, cast

import hiredis

from ._harness import Barrier, Sample
from ._live_common import (
    BATCH,
    END,
    WARMUP_FRACTION,
    bytes_payload,
    json_payload,
    limit,
    monotonic_ns,
    paced_async,
    paced_sync,
    perf_counter,
    pub_result,
    publish_command,
    run_loop,
    stamped_bytes,
    sub_result,
)

# -- redis-py asyncio ----------------------------------------------------------------------------


def redispy_async_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_redispy_async_pub(params, barrier, pipeline=False))


def redispy_async_pipe_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_redispy_async_pub(params, barrier, pipeline=True))


async def _redispy_async_pub(params: dict[str, Any], barrier: Barrier, *, pipeline: bool) -> Sample:
    import redis.asyncio

    channel = params["channel"]
    r = redis.asyncio.Redis.from_url(params["url"])
    try:
        await r.ping()
        pipe = r.pipeline(transaction=False)
        barrier.wait()
        if params["rate"]:
            stamped = stamped_bytes(params["payload_size"])

            async def burst(k: int) -> None:
                # One awaited publish at a time tops out near 2k/s: a pipeline per burst is how
                # a redis-py user reaches these rates.
                for _ in range(k):
                    pipe.publish(channel, stamped())
                await pipe.execute()

            result = await paced_async(params, burst)
            await r.publish(channel, END)
            return result
        payload = bytes_payload(params["payload_size"])
        sent = 0
        t0 = perf_counter()
        end = t0 + params["duration"]
        if pipeline:
            while perf_counter() < end:
                for _ in range(BATCH):
                    pipe.publish(channel, payload)
                await pipe.execute()
                sent += BATCH
        else:
            publish = r.publish
            while True:
                for _ in range(64):
                    await publish(channel, payload)
                sent += 64
                if perf_counter() >= end:
                    break
        await r.publish(channel, END)
        return pub_result(sent, t0, perf_counter())
    finally:
        await r.aclose()


def redispy_async_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_redispy_async_sub(params, barrier))


async def _redispy_async_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import redis.asyncio

    duration = float(params["duration"])
    latency = bool(params["rate"])
    warm_ns = int(duration * WARMUP_FRACTION * 1e9)
    r = redis.asyncio.Redis.from_url(params["url"])
    ps = r.pubsub()
    await ps.subscribe(params["channel"])
    await ps.get_message(timeout=5.0)  # the subscribe confirmation
    n = 0
    first = last = 0.0
    lat: list[int] = []

    async def consume() -> None:
        nonlocal n, first, last
        stop_at = math.inf
        floor = 0
        async for m in ps.listen():
            if m["type"] != "message":
                continue
            data = m["data"]
            if latency:
                now = monotonic_ns()
                if len(data) == 3:
                    break
                t = int(data[:19])
                if n == 0:
                    first = perf_counter()
                    floor = t + warm_ns
                n += 1
                if t >= floor:
                    lat.append(now - t)
                continue
            if len(data) == 3:
                break
            n += 1
            if n & 1023 == 0:
                if perf_counter() >= stop_at:
                    break
            elif n == 1:
                first = perf_counter()
                stop_at = first + duration
        last = perf_counter()

    barrier.wait()
    try:
        await asyncio.wait_for(consume(), limit(params))
    except TimeoutError:
        last = perf_counter()
    return sub_result(n, first, last, lat if latency else None)


# -- redis-py sync -------------------------------------------------------------------------------


def redispy_sync_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return _redispy_sync_pub(params, barrier, pipeline=False)


def redispy_sync_pipe_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return _redispy_sync_pub(params, barrier, pipeline=True)


def _redispy_sync_pub(params: dict[str, Any], barrier: Barrier, *, pipeline: bool) -> Sample:
    import redis

    channel = params["channel"]
    r = redis.Redis.from_url(params["url"])
    try:
        r.ping()
        pipe = r.pipeline(transaction=False)
        payload = bytes_payload(params["payload_size"])
        barrier.wait()
        sent = 0
        t0 = perf_counter()
        end = t0 + params["duration"]
        if pipeline:
            while perf_counter() < end:
                for _ in range(BATCH):
                    pipe.publish(channel, payload)
                pipe.execute()
                sent += BATCH
        else:
            publish = r.publish
            while True:
                for _ in range(64):
                    publish(channel, payload)
                sent += 64
                if perf_counter() >= end:
                    break
        r.publish(channel, END)
        return pub_result(sent, t0, perf_counter())
    finally:
        r.close()


def redispy_sync_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import redis

    duration = float(params["duration"])
    r = redis.Redis.from_url(params["url"])
    ps = r.pubsub()
    ps.subscribe(params["channel"])
    ps.get_message(timeout=5.0)  # the subscribe confirmation
    n = 0
    first = 0.0
    stop_at = math.inf
    barrier.wait()
    # No timeout of its own: listen() blocks; the parent kills a worker that never finishes.
    for m in ps.listen():  # type: ignore[no-untyped-call]
        if m["type"] != "message":
            continue
        if len(m["data"]) == 3:
            break
        n += 1
        if n & 1023 == 0:
            if perf_counter() >= stop_at:
                break
        elif n == 1:
            first = perf_counter()
            stop_at = first + duration
    return sub_result(n, first, perf_counter())


# -- raw: a socket, pre-packed commands, hiredis.Reader (the ceiling) ----------------------------


def raw_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return _raw_pub(params, barrier, bytes_payload(params["payload_size"]))


def raw_herald_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    """Pre-encoded Herald envelopes (JSON payload), one PUBLISH each, at the raw client's pace."""
    from herald._core.wire import Encoder

    envelope = Encoder().envelope(json_payload(params["payload_size"]))
    return _raw_pub(params, barrier, envelope)


def _raw_pub(params: dict[str, Any], barrier: Barrier, payload: bytes) -> Sample:
    channel = params["channel"]
    sock = socket.create_connection((params["host"], params["port"]))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    unanswered = 0

    def read_replies(keep: int) -> None:
        # Every reply to PUBLISH is one integer line, ":<receivers>\r\n".
        nonlocal unanswered
        while unanswered > keep:
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionError("server closed the connection")
            unanswered -= data.count(b"\n")

    try:
        barrier.wait()
        if params["rate"]:
            stamped = stamped_bytes(params["payload_size"])

            def burst(k: int) -> None:
                nonlocal unanswered
                sock.sendall(b"".join([publish_command(channel, stamped()) for _ in range(k)]))
                unanswered += k
                read_replies(0)

            result = paced_sync(params, burst)
        else:
            batch = publish_command(channel, payload) * BATCH
            sent = 0
            t0 = perf_counter()
            end = t0 + params["duration"]
            while perf_counter() < end:
                sock.sendall(batch)
                sent += BATCH
                unanswered += BATCH
                read_replies(BATCH)  # one batch in flight while the next is written
            read_replies(0)
            result = pub_result(sent, t0, perf_counter())
        sock.sendall(publish_command(channel, END))
        unanswered += 1
        read_replies(0)
        return result
    finally:
        sock.close()


class _RawSubscriber(asyncio.Protocol):
    def __init__(self, channel: bytes, duration: float, latency: bool) -> None:
        self.reader = hiredis.Reader()
        self.channel = channel
        self.duration = duration
        self.latency = latency
        self.warm_ns = int(duration * WARMUP_FRACTION * 1e9)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.n = 0
        self.first = self.last = 0.0
        self.stop_at = math.inf
        self.floor = 0
        self.lat: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport; not an asyncio.Transport subclass on uvloop
        cast(asyncio.Transport, transport).write(_command_args(b"SUBSCRIBE", self.channel))

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        reader = self.reader
        reader.feed(data)
        if not self.ready.done():
            reply = reader.gets()
            if reply is False:
                return
            self.ready.set_result(None)  # [b"subscribe", channel, 1]
        if self.latency:
            self._measure()
            return
        n = self.n
        stop_at = self.stop_at
        reply = reader.gets()
        while reply is not False:
            if len(reply[2]) == 3:
                self._finish(n)
                return
            n += 1
            if n & 1023 == 0:
                if perf_counter() >= stop_at:
                    self._finish(n)
                    return
            elif n == 1:
                self.first = perf_counter()
                self.stop_at = stop_at = self.first + self.duration
            reply = reader.gets()
        self.n = n

    def _measure(self) -> None:
        reply = self.reader.gets()
        while reply is not False:
            now = monotonic_ns()
            data = reply[2]
            if len(data) == 3:
                self._finish(self.n)
                return
            t = int(data[:19])
            if self.n == 0:
                self.first = perf_counter()
                self.floor = t + self.warm_ns
            self.n += 1
            if t >= self.floor:
                self.lat.append(now - t)
            reply = self.reader.gets()

    def _finish(self, n: int) -> None:
        self.n = n
        self.last = perf_counter()
        self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self._finish(self.n)


def _command_args(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def raw_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return run_loop(_raw_sub(params, barrier))


async def _raw_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    loop = asyncio.get_running_loop()
    latency = bool(params["rate"])
    channel = params["channel"].encode()
    transport, proto = await loop.create_connection(
        lambda: _RawSubscriber(channel, float(params["duration"]), latency),
        params["host"],
        params["port"],
    )
    try:
        await asyncio.wait_for(proto.ready, 5.0)
        barrier.wait()
        try:
            await asyncio.wait_for(asyncio.shield(proto.done), limit(params))
        except TimeoutError:
            proto._finish(proto.n)
        return sub_result(proto.n, proto.first, proto.last, proto.lat if latency else None)
    finally:
        transport.close()
