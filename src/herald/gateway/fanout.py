"""From Herald subscriptions to clients: bounded outbound queues and shared subscriptions.

A topic or pattern that several clients follow live is subscribed once; each message is encoded
once, and each batch of messages is framed once, for every client (:class:`Batch`). A client
that keeps up gets that frame written to its socket at once by the fan-out itself (no task per
client and message); one that lags gets what queued up as one frame later. A client that
resumes from an offset gets a subscription of its own (its catch-up differs from everyone
else's). A client whose queue is full is cut off with a reason instead of growing the
gateway's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from herald import AsyncClient, Gap, HeraldError, HistoryLost, Message, Subscription

from .frames import event_frame, json_array, message_bytes, message_dict, ws_text_frame

log = logging.getLogger("herald.gateway")

#: Whether this Herald has recoverable topics (``subscribe(..., since=, last=)``).
RESUME_SUPPORTED = "since" in inspect.signature(AsyncClient.subscribe).parameters

#: Gateway's own subscription buffer: deep, since the per-client queues are the real limit.
_SHARED_PENDING = 100_000
#: Messages encoded and queued for every client in one step, at most.
_BATCH = 1000
#: A fan-out round longer than this (seconds) that carried several messages (they come
#: faster than rounds) is followed by a rest of ``_REST`` times its length: one write per
#: client costs about the same for one message as for a hundred, so fewer, fuller rounds
#: leave CPU to the rest of the process (and machine) at large fan-outs. After a round of one
#: message the rest would only delay the next: at 10,000 clients and 10 msg/s a round is
#: ~100 ms of CPU, and a rest as long doubled every message's latency.
_REST_AFTER = 0.002
_REST = 1.0


@dataclass
class GatewayStats:
    """Counters of one gateway (also exported as Prometheus metrics)."""

    published: int = 0
    delivered: int = 0
    dropped: int = 0
    slow_disconnects: int = 0
    gaps: int = 0
    resumed: int = 0
    recovered: int = 0
    history_lost: int = 0
    refused: int = 0
    errors: int = 0
    ws_clients: int = 0
    # seconds from publish to the gateway's fan-out of the last batch, and the most seen
    fanout_lag: float = 0.0
    fanout_lag_max: float = 0.0
    # fan-out rounds (one batch written or queued to every client of a shared subscription)
    # and the seconds they took, all and the longest
    fanout_rounds: int = 0
    fanout_seconds: float = 0.0
    fanout_round_max: float = 0.0
    sse_clients: int = 0
    started: float = field(default_factory=time.time)


class Batch:
    """Messages queued together: encoded once, and framed once for all clients that get it.

    ``frames`` are the messages' JSON (UTF-8), ``event_ids`` their SSE ids. What a WebSocket
    client receives for it (one object, or an array of several) and the WebSocket frame of
    that are computed on first use and shared by every client that gets exactly this batch,
    which is every client that keeps up.
    """

    __slots__ = ("_body", "_frame", "_text", "_texts", "event_ids", "frames", "size")

    def __init__(self, frames: list[bytes], event_ids: list[str | None] | None = None) -> None:
        self.frames = frames
        self.event_ids = event_ids if event_ids is not None else [None] * len(frames)
        self.size = sum(map(len, frames))
        self._body: bytes | None = None
        self._frame: bytes | None = None
        self._text: str | None = None
        self._texts: list[str] | None = None

    @classmethod
    def one(cls, text: str, event_id: str | None = None) -> Batch:
        return cls([text.encode()], [event_id])

    def body(self) -> bytes:
        """The payload of one WebSocket frame: the object, or a JSON array of several."""
        if self._body is None:
            self._body = json_array(self.frames)
        return self._body

    def frame(self) -> bytes:
        """The whole WebSocket text frame carrying :meth:`body`."""
        if self._frame is None:
            self._frame = ws_text_frame(self.body())
        return self._frame

    def text(self) -> str:
        """:meth:`body` as text (for ASGI's ``websocket.send``)."""
        if self._text is None:
            self._text = self.body().decode()
        return self._text

    def texts(self) -> list[str]:
        """Each message as text (for SSE, one event each)."""
        if self._texts is None:
            self._texts = [f.decode() for f in self.frames]
        return self._texts


class Sink:
    """One client's outbound queue of batches waiting to be sent.

    A WebSocket client served by :mod:`.uvicorn_ws` has a ``direct`` writer: while nothing is
    queued and its socket takes data, a batch's shared frame is written to it at once, with no
    task switch and no per-client framing. Otherwise batches queue here for the connection's
    writer, which sends everything queued as one frame. Full (``max_queue`` messages or
    ``max_bytes``): the client is closed as too slow; the writer then sends the close with
    ``reason``, and ``on_cut`` (if given) is called.

    ``on_wake`` (if given) is called when a batch is queued or the sink closes: a connection
    starts its writer then, instead of keeping a task per client waiting (:meth:`wait`) for
    what clients that keep up never need. Memory counts here: a gateway holds thousands.
    """

    __slots__ = (
        "_event",
        "bytes",
        "close_code",
        "closed",
        "count",
        "direct",
        "max_bytes",
        "max_queue",
        "on_cut",
        "on_wake",
        "queue",
        "reason",
        "stats",
    )

    def __init__(
        self,
        stats: GatewayStats,
        max_queue: int,
        max_bytes: int,
        *,
        direct: Callable[[bytes], bool] | None = None,
        on_cut: Callable[[], None] | None = None,
        on_wake: Callable[[], None] | None = None,
    ) -> None:
        self.stats = stats
        self.on_cut = on_cut
        self.on_wake = on_wake
        self.max_queue = max_queue
        self.max_bytes = max_bytes
        self.direct = direct
        # A list, not a deque: emptied whole (take_nowait), and 700 bytes smaller when empty.
        self.queue: list[Batch] = []
        self.count = 0
        self.bytes = 0
        self.closed = False
        self.close_code = 1000
        self.reason = ""
        self._event: asyncio.Event | None = None  # made by the first wait()

    def _room(self, n: int, size: int) -> bool:
        if self.count + n <= self.max_queue and self.bytes + size <= self.max_bytes:
            return True
        self.stats.slow_disconnects += 1
        self.stats.dropped += self.count + n
        self.close(1008, f"slow client: {self.count} messages ({self.bytes} bytes) not read")
        self.queue.clear()
        self.count = self.bytes = 0
        if self.on_cut is not None:
            self.on_cut()  # e.g. abort the connection: its socket buffer is full and stays so
        return False

    def push(self, frame: str, event_id: str | None = None) -> bool:
        """Queue one frame; False if the client is closed (now or before)."""
        return self.push_batch(Batch.one(frame, event_id))

    def push_batch(self, batch: Batch) -> bool:
        """Send or queue a batch; False if the client is closed (now or before)."""
        if self.closed:
            return False
        n = len(batch.frames)
        # Written at once only behind nothing queued, so frames never overtake each other.
        if not self.queue and self.direct is not None and self.direct(batch.frame()):
            self.stats.delivered += n
            return True
        if not self._room(n, batch.size):
            return False
        self.queue.append(batch)
        self.count += n
        self.bytes += batch.size
        self._wake()
        return True

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()
        if self.on_wake is not None:
            self.on_wake()

    def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.close_code = code
            self.reason = reason
        self._wake()

    async def wait(self) -> bool:
        """Wait until a batch is queued; False once closed and drained."""
        while not self.queue:
            if self.closed:
                return False
            if self._event is None:
                self._event = asyncio.Event()
            self._event.clear()
            await self._event.wait()
        return True

    def take_nowait(self) -> list[Batch]:
        """Every queued batch, oldest first (counted as delivered)."""
        batches = self.queue
        self.queue = []
        self.stats.delivered += self.count
        self.count = self.bytes = 0
        return batches

    async def take(self) -> tuple[list[tuple[str, str | None, int]], int]:
        """Every queued message as ``(text, event_id, 1)`` (waiting for one) and their number;
        nothing once closed and drained."""
        if not await self.wait():
            return [], 0
        n = self.count
        items: list[tuple[str, str | None, int]] = []
        for batch in self.take_nowait():
            items.extend(zip(batch.texts(), batch.event_ids, (1,) * len(batch.frames), strict=True))
        return items, n


def body_of(batches: list[Batch]) -> bytes:
    """One WebSocket payload for everything queued: shared when it is a single batch."""
    if len(batches) == 1:
        return batches[0].body()
    return json_array([f for b in batches for f in b.frames])


def event_id(msg: Message) -> str | None:
    """The SSE id of a message: its offset where it has one (resumable), else its id."""
    return str(msg.offset) if msg.offset is not None else msg.id


class _Shared:
    """One live Herald subscription shared by every client following the same name.

    Its task takes every message buffered at once, encodes each once, and hands the batch to
    each client in one step: under load batches grow, so the work per client and second (one
    write of one shared frame) shrinks instead of falling behind message by message.
    """

    def __init__(self, name: str, stats: GatewayStats) -> None:
        self.name = name
        self.stats = stats
        self.sinks: set[Sink] = set()
        self.sub: Subscription | None = None
        self.task: asyncio.Task[None] | None = None

    async def pump(self) -> None:
        sub = self.sub
        assert sub is not None
        name = self.name
        try:
            while True:
                try:
                    first = await sub.__anext__()
                except StopAsyncIteration:
                    return
                except HistoryLost as exc:  # a recoverable topic's break: told, and on
                    self.lost(exc)
                    continue
                batch = [first]
                lost: HistoryLost | None = None
                while sub.pending and len(batch) < _BATCH:
                    try:
                        batch.append(await sub.__anext__())
                    except HistoryLost as exc:  # after this batch, in sequence
                        lost = exc
                        break
                if (ts := first.timestamp) is not None:
                    lag = self.stats.fanout_lag = time.time() - ts
                    if lag > self.stats.fanout_lag_max:
                        self.stats.fanout_lag_max = lag
                frames = [message_bytes(m, name) for m in batch]
                shared = Batch(frames, [event_id(m) for m in batch])
                started = time.perf_counter()
                for sink in tuple(self.sinks):
                    sink.push_batch(shared)
                if lost is not None:
                    self.lost(lost)
                spent = time.perf_counter() - started
                stats = self.stats
                stats.fanout_rounds += 1
                stats.fanout_seconds += spent
                if spent > stats.fanout_round_max:
                    stats.fanout_round_max = spent
                if spent > _REST_AFTER and len(batch) > 1:
                    # A long round (many clients, or a busy machine) of several messages:
                    # rest as long, so that the next round carries what arrives meanwhile
                    # in one frame per client.
                    await asyncio.sleep(spent * _REST)
        except HeraldError as exc:
            log.error("gateway subscription %s ended: %s", name, exc)
            for sink in tuple(self.sinks):
                sink.close(1011, f"subscription {name} ended: {exc}"[:120])

    def lost(self, exc: HistoryLost) -> None:
        self.stats.history_lost += 1
        batch = Batch.one(event_frame("history_lost", **history_lost_fields(exc, self.name)))
        for sink in tuple(self.sinks):
            sink.push_batch(batch)

    def gap(self, gap: Gap) -> None:
        self.stats.gaps += 1
        frame = event_frame(
            "gap", subscription=self.name, since=gap.since, until=gap.until, reason=gap.reason
        )
        batch = Batch.one(frame)
        for sink in tuple(self.sinks):
            sink.push_batch(batch)


class Fanout:
    """The gateway's subscriptions, shared where possible."""

    def __init__(self, hub: AsyncClient, stats: GatewayStats) -> None:
        self.hub = hub
        self.stats = stats
        self._shared: dict[str, _Shared] = {}
        self._lock = asyncio.Lock()
        self._own: set[Subscription] = set()

    def clients(self, name: str) -> int:
        shared = self._shared.get(name)
        return len(shared.sinks) if shared else 0

    @property
    def names(self) -> list[str]:
        return list(self._shared)

    def dropped(self) -> int:
        """Messages the shared Herald subscriptions dropped (the gateway itself fell behind)."""
        return sum(s.sub.stats.dropped for s in self._shared.values() if s.sub is not None)

    async def add(self, name: str, sink: Sink) -> None:
        async with self._lock:
            shared = self._shared.get(name)
            if shared is None:
                shared = _Shared(name, self.stats)
                sub = self.hub.subscribe(name, max_pending=_SHARED_PENDING, on_gap=shared.gap)
                await sub.start()
                shared.sub = sub
                shared.task = asyncio.get_running_loop().create_task(shared.pump())
                self._shared[name] = shared
            shared.sinks.add(sink)

    async def remove(self, name: str, sink: Sink) -> None:
        async with self._lock:
            shared = self._shared.get(name)
            if shared is None:
                return
            shared.sinks.discard(sink)
            if not shared.sinks:
                del self._shared[name]
                await _stop(shared)

    async def close(self) -> None:
        async with self._lock:
            for shared in self._shared.values():
                for sink in shared.sinks:
                    sink.close(1001, "gateway shutting down")
                await _stop(shared)
            self._shared.clear()

    async def resume(
        self,
        name: str,
        sink: Sink,
        *,
        since: int | None = None,
        last: int | None = None,
        gate: Gate | None = None,
    ) -> Subscription:
        """A subscription of ``sink``'s own on a recoverable topic, from an offset, then live.

        With a ``gate``, what the subscription delivers (recovered messages, then live ones,
        ``history_lost`` and ``gap`` frames) waits, in order, until the gate opens: the
        WebSocket sends its ``subscribed`` frame first.

        Raises:
            NotImplementedError: this Herald has no recoverable topics.
        """
        if not RESUME_SUPPORTED:
            raise NotImplementedError("this Herald has no recoverable topics")
        stats = self.stats
        stats.resumed += 1
        resumed_to = since or 0
        run = gate.run if gate is not None else _now

        def deliver(msg: Message) -> None:
            nonlocal resumed_to
            if isinstance(msg.offset, int) and msg.offset > resumed_to:
                resumed_to = msg.offset
            batch = Batch([message_bytes(msg, name)], [event_id(msg)])
            run(lambda: sink.push_batch(batch))

        def lost(exc: Any) -> None:
            stats.history_lost += 1
            frame = event_frame("history_lost", **history_lost_fields(exc, name))
            run(lambda: sink.push(frame))

        def gap(g: Gap) -> None:
            stats.gaps += 1
            frame = event_frame(
                "gap", subscription=name, since=g.since, until=g.until, reason=g.reason
            )
            run(lambda: sink.push(frame))

        options: dict[str, Any] = {"since": since} if since is not None else {"last": last}
        subscribe: Callable[..., Subscription] = self.hub.subscribe
        sub = subscribe(
            name,
            handler=deliver,
            max_pending=_SHARED_PENDING,
            on_gap=gap,
            on_history_lost=lost,
            **options,
        )
        await sub.start()
        self._own.add(sub)
        return sub

    async def release(self, sub: Subscription) -> None:
        """Close a subscription made by :meth:`resume`, keeping its counts."""
        if sub in self._own:
            self._own.discard(sub)
            self.stats.recovered += getattr(sub.stats, "recovered", 0)
        await sub.close()

    def recovered(self) -> int:
        """Messages recovered from history, by open and closed resumed subscriptions."""
        return self.stats.recovered + sum(getattr(s.stats, "recovered", 0) for s in self._own)


def _now(fn: Callable[[], object]) -> None:
    fn()


class Gate:
    """Holds deliveries (callables, in order) until :meth:`open`; then runs them and lets
    every later one through at once."""

    def __init__(self) -> None:
        self._held: list[Callable[[], object]] | None = []

    def run(self, fn: Callable[[], object]) -> None:
        if self._held is None:
            fn()
        else:
            self._held.append(fn)

    def open(self) -> None:
        held, self._held = self._held, None
        for fn in held or ():
            fn()


async def _stop(shared: _Shared) -> None:
    if shared.sub is not None:
        await shared.sub.close()
    if shared.task is not None:
        shared.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await shared.task


def history_lost_fields(exc: Any, name: str) -> dict[str, Any]:
    """The fields of a ``history_lost`` frame from a ``herald.HistoryLost``."""
    return {
        "subscription": name,
        "topic": getattr(exc, "topic", name),
        "last_offset": getattr(exc, "last_offset", None),
        "first_available": getattr(exc, "first_available", None),
        "epoch": getattr(exc, "epoch", None),
        "reason": str(getattr(exc, "reason", exc)),
    }


def stored_dicts(messages: list[Any]) -> list[dict[str, Any]]:
    return [message_dict(m) for m in messages]
