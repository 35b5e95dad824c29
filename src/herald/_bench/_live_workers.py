"""Publishers and subscribers of the live benchmark, one function per client, run in workers.

Every worker gets the same ``params`` (``url``, ``host``, ``port``, ``channel``, ``duration``,
``payload_size``, ``rate``) and the barrier. ``rate == 0`` measures throughput: the publisher
publishes as fast as it can for ``duration`` seconds after the barrier, then an end marker (a
3-byte payload) on the same channel, which therefore arrives after every timed message. The
subscriber counts from its first message to the end marker, or for at most ``duration`` seconds
of receiving when it is slower than the publisher, and reports count / (last - first).

``rate > 0`` measures latency: the publisher paces itself in bursts (one burst per millisecond,
sized from ``perf_counter``, never a sleep per message) and puts ``time.monotonic_ns()`` (the
system-wide CLOCK_MONOTONIC on Linux) in each payload; the subscriber subtracts it from its own
``monotonic_ns()`` on arrival. Messages published in the first tenth of the run are warm-up.

The hot loops are written out per client on purpose: a shared helper called per message would add
the same cost to every row and hide the differences being measured.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis

from ._harness import Barrier, Sample, Worker, percentiles, rate

END = b"END"  # the end marker: every real payload is longer than 3 bytes
BATCH = 1000  # pipelined publishers send this many commands per write
BURST_INTERVAL = 0.001  # latency publishers: one burst per millisecond
WARMUP_FRACTION = 0.1
QUANTILES = (50.0, 99.0, 99.9)
perf_counter = time.perf_counter
monotonic_ns = time.monotonic_ns


# -- payloads ----------------------------------------------------------------------------------


def bytes_payload(size: int) -> bytes:
    return b"x" * max(size, 4)


def stamped_bytes(size: int) -> Callable[[], bytes]:
    pad = b"x" * max(size - 19, 0)
    return lambda: b"%019d" % monotonic_ns() + pad


def json_payload(size: int) -> dict[str, str]:
    """A dict whose JSON encoding is ``size`` bytes: what a Herald user would publish."""
    return {"p": "x" * max(size - 8, 1)}  # {"p":"..."}


def stamped_json(size: int) -> Callable[[], dict[str, Any]]:
    pad = "x" * max(size - len(f'{{"t":{monotonic_ns()},"p":""}}'), 1)
    return lambda: {"t": monotonic_ns(), "p": pad}


def _command(channel: str, payload: bytes) -> bytes:
    ch = channel.encode()
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(ch),
        ch,
        len(payload),
        payload,
    )


# -- results -----------------------------------------------------------------------------------


def _pub_result(sent: int, t0: float, t1: float, **extra: Any) -> Sample:
    return {"sent": sent, "seconds": t1 - t0, "rate": rate(sent, t1 - t0), **extra}


def _sub_result(
    received: int, first: float, last: float, latencies: list[int] | None = None, **extra: Any
) -> Sample:
    out: Sample = {
        "received": received,
        "seconds": last - first if received else 0.0,
        "rate": rate(received, last - first) if received > 1 else None,
        **extra,
    }
    if latencies is not None:
        p = percentiles(latencies, QUANTILES)
        out["latency_us"] = {
            "samples": len(latencies),
            "p50": p[0] / 1000,
            "p99": p[1] / 1000,
            "p99_9": p[2] / 1000,
            "max": latencies[-1] / 1000 if latencies else math.nan,
        }
    return out


def _limit(params: dict[str, Any]) -> float:
    """How long a subscriber waits for its end marker before giving up."""
    return float(params["duration"]) * 3 + 30


# -- pacing (latency mode) ---------------------------------------------------------------------


async def _paced_async(params: dict[str, Any], burst: Callable[[int], Awaitable[None]]) -> Sample:
    target_rate = float(params["rate"])
    duration = float(params["duration"])
    sent = 0
    t0 = perf_counter()
    end = t0 + duration
    while True:
        now = perf_counter()
        if now >= end:
            break
        due = int((now - t0) * target_rate) - sent
        if due > 0:
            await burst(due)
            sent += due
        await asyncio.sleep(BURST_INTERVAL)
    return _pub_result(sent, t0, perf_counter())


def _paced_sync(params: dict[str, Any], burst: Callable[[int], None]) -> Sample:
    target_rate = float(params["rate"])
    duration = float(params["duration"])
    sent = 0
    t0 = perf_counter()
    end = t0 + duration
    while True:
        now = perf_counter()
        if now >= end:
            break
        due = int((now - t0) * target_rate) - sent
        if due > 0:
            burst(due)
            sent += due
        time.sleep(BURST_INTERVAL)
    return _pub_result(sent, t0, perf_counter())


# -- Herald --------------------------------------------------------------------------------------


def herald_async_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_herald_async_pub(params, barrier, batch=True))


def herald_async_nobatch_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_herald_async_pub(params, barrier, batch=False))


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

            result = await _paced_async(params, burst)
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
        return _pub_result(sent, t0, perf_counter(), errors=hub.stats.publish_errors)


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
        return _pub_result(sent, t0, perf_counter(), errors=hub.stats.publish_errors)


def herald_handler_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_herald_sub(params, barrier, iterate=False))


def herald_iter_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_herald_sub(params, barrier, iterate=True))


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
            await asyncio.wait_for(asyncio.shield(done), _limit(params))
        except TimeoutError:
            finish()
        stats = sub.stats
        if iterate:
            task.cancel()
        return _sub_result(
            final,
            first,
            last,
            lat if latency else None,
            dropped=stats.dropped,
            handler_errors=stats.handler_errors,
        )


# -- redis-py asyncio ----------------------------------------------------------------------------


def redispy_async_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_redispy_async_pub(params, barrier, pipeline=False))


def redispy_async_pipe_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_redispy_async_pub(params, barrier, pipeline=True))


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

            result = await _paced_async(params, burst)
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
        return _pub_result(sent, t0, perf_counter())
    finally:
        await r.aclose()


def redispy_async_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return asyncio.run(_redispy_async_sub(params, barrier))


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
        await asyncio.wait_for(consume(), _limit(params))
    except TimeoutError:
        last = perf_counter()
    return _sub_result(n, first, last, lat if latency else None)


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
        return _pub_result(sent, t0, perf_counter())
    finally:
        r.close()


def redispy_sync_sub(params: dict[str, Any], barrier: Barrier) -> Sample:
    import redis

    duration = float(params["duration"])
    r = redis.Redis.from_url(params["url"])
    ps = r.pubsub()  # type: ignore[no-untyped-call]
    ps.subscribe(params["channel"])
    ps.get_message(timeout=5.0)  # the subscribe confirmation
    n = 0
    first = 0.0
    stop_at = math.inf
    barrier.wait()
    # No timeout of its own: listen() blocks; the parent kills a worker that never finishes.
    for m in ps.listen():
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
    return _sub_result(n, first, perf_counter())


# -- raw: a socket, pre-packed commands, hiredis.Reader (the ceiling) ----------------------------


def raw_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    return _raw_pub(params, barrier, bytes_payload(params["payload_size"]))


def raw_herald_pub(params: dict[str, Any], barrier: Barrier) -> Sample:
    """Pre-encoded Herald envelopes (JSON payload), one PUBLISH each, at the raw client's pace."""
    from herald._wire import Encoder

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
                sock.sendall(b"".join([_command(channel, stamped()) for _ in range(k)]))
                unanswered += k
                read_replies(0)

            result = _paced_sync(params, burst)
        else:
            batch = _command(channel, payload) * BATCH
            sent = 0
            t0 = perf_counter()
            end = t0 + params["duration"]
            while perf_counter() < end:
                sock.sendall(batch)
                sent += BATCH
                unanswered += BATCH
                read_replies(BATCH)  # one batch in flight while the next is written
            read_replies(0)
            result = _pub_result(sent, t0, perf_counter())
        sock.sendall(_command(channel, END))
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
        assert isinstance(transport, asyncio.Transport)
        transport.write(_command_args(b"SUBSCRIBE", self.channel))

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
    return asyncio.run(_raw_sub(params, barrier))


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
            await asyncio.wait_for(asyncio.shield(proto.done), _limit(params))
        except TimeoutError:
            proto._finish(proto.n)
        return _sub_result(proto.n, proto.first, proto.last, proto.lat if latency else None)
    finally:
        transport.close()


WORKERS: dict[str, Worker] = {
    "herald-async": herald_async_pub,
    "herald-async-nobatch": herald_async_nobatch_pub,
    "herald-sync": herald_sync_pub,
    "herald-handler": herald_handler_sub,
    "herald-iter": herald_iter_sub,
    "redispy-async": redispy_async_pub,
    "redispy-async-pipe": redispy_async_pipe_pub,
    "redispy-async-sub": redispy_async_sub,
    "redispy-sync": redispy_sync_pub,
    "redispy-sync-pipe": redispy_sync_pipe_pub,
    "redispy-sync-sub": redispy_sync_sub,
    "raw": raw_pub,
    "raw-herald": raw_herald_pub,
    "raw-sub": raw_sub,
}
