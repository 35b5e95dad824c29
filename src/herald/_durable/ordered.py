"""A consumer's handler run concurrently: ``consume(..., handler=f, concurrency=N,
ordered_by_key=True)``.

Messages are queued in *lanes*, one per key; a lane is handled by one worker at a time, in the
order its messages arrived (the stream's order), while up to N workers handle different lanes.
With ``ordered_by_key`` a message's lane is its ordering key (``publish(..., key=...)``), and a
message without a key is a lane of its own; without it every message is its own lane (plain
concurrency). Workers are asyncio tasks (:func:`run_tasks`), or threads for the threaded client
(:class:`ThreadLanes`).

A failing handler in ordered mode is retried *in place*, after the consumer's ``backoff`` delay,
holding its lane (and the message's lease), so the next message of its key never overtakes it;
after ``max_deliver`` attempts it is dead-lettered and the lane moves on. Without order, a
failure is a nak as usual (redelivered later, possibly to another consumer). How a message is
handled, and a failure settled, is :mod:`~herald._durable.handling`'s.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

from herald._core.durable_message import DurableMessage
from herald._errors import HeraldError

from .handling import Handled, handle, handle_in_thread

T = TypeVar("T")
_STOP = object()


class Driver(Handled, Protocol):
    """What the lanes use of their consumer."""

    topic: str
    concurrency: int
    _stopping: asyncio.Task[None] | None

    async def _next(self) -> DurableMessage: ...
    def _next_sync(self, timeout: float | None) -> DurableMessage: ...


class Lanes(Generic[T]):
    """Items queued per key (sans-I/O). :meth:`put` says when a key needs a worker; that worker
    then :meth:`take`\\ s the key's items until it gets ``None`` (the lane is then gone)."""

    def __init__(self) -> None:
        self._lanes: dict[Hashable, deque[T]] = {}

    def put(self, key: Hashable, item: T) -> bool:
        """Queue ``item``; True if ``key`` had no lane: hand the key to a worker."""
        lane = self._lanes.get(key)
        if lane is None:
            self._lanes[key] = deque((item,))
            return True
        lane.append(item)  # its worker takes it after the ones before it
        return False

    def take(self, key: Hashable) -> T | None:
        """The next item of ``key``'s lane; ``None`` when empty, and the lane is closed."""
        lane = self._lanes[key]
        if lane:
            return lane.popleft()
        del self._lanes[key]
        return None

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())


def lane_of(msg: DurableMessage, ordered: bool) -> Hashable:
    # A message is its own key (identity hash) unless ordered and it has a key.
    if ordered and msg.key is not None:
        return msg.key
    return msg


# -- asyncio ---------------------------------------------------------------------------------


async def run_tasks(c: Driver, handler: Callable[[DurableMessage], Any]) -> None:
    """The consumer's handler task: dispatch messages to lanes, ``c.concurrency`` workers."""
    lanes: Lanes[DurableMessage] = Lanes()
    ready: asyncio.Queue[Hashable] = asyncio.Queue()
    is_coro = inspect.iscoroutinefunction(handler)

    async def work() -> None:
        while True:
            key = await ready.get()
            while (msg := lanes.take(key)) is not None:
                if c._stopping is not None:  # a handler raised StopSubscription
                    return
                await handle(c, handler, is_coro, msg)

    loop = asyncio.get_running_loop()
    workers = [loop.create_task(work()) for _ in range(c.concurrency)]
    try:
        while True:
            try:
                msg = await c._next()
            except (StopAsyncIteration, HeraldError):
                return  # closed (an error is logged by the consumer)
            msg._seen = False  # not yet handed to the handler: a hand-back costs no attempt
            key = lane_of(msg, c.ordered_by_key)
            if lanes.put(key, msg):
                ready.put_nowait(key)
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


# -- threads ---------------------------------------------------------------------------------


class ThreadLanes:
    """The same for :class:`SyncConsumer`: :meth:`dispatch` runs on the consumer's handler
    thread and feeds ``c.concurrency`` worker threads."""

    def __init__(self, c: Driver, handler: Callable[[DurableMessage], Any]) -> None:
        self._c = c
        self._handler = handler
        self._lanes: Lanes[DurableMessage] = Lanes()
        self._lock = threading.Lock()
        self._ready: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._work, name=f"herald-handler-{c.topic}-{i}", daemon=True)
            for i in range(c.concurrency)
        ]
        for t in self.threads:
            t.start()

    def dispatch(self) -> None:
        c = self._c
        try:
            while True:
                try:
                    msg = c._next_sync(None)
                except HeraldError:
                    return
                msg._seen = False
                key = lane_of(msg, c.ordered_by_key)
                with self._lock:
                    new = self._lanes.put(key, msg)
                if new:
                    self._ready.put(key)
        finally:
            for _ in self.threads:
                self._ready.put(_STOP)

    def _work(self) -> None:
        c = self._c
        while (key := self._ready.get()) is not _STOP:
            while not c.closed:  # once closed, what is queued was handed back to the group
                with self._lock:
                    msg = self._lanes.take(key)
                if msg is None:
                    break
                handle_in_thread(c, self._handler, msg)

    def join(self, timeout: float) -> None:
        for t in self.threads:
            if t is not threading.current_thread():
                t.join(timeout)
