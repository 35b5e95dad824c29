"""A consumer of a durable topic for threads: the asyncio :class:`Consumer` underneath."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from herald._core.durable_message import ConsumerStats, DurableHandler, DurableMessage
from herald._core.typed import typed
from herald._durable.consumer import Consumer
from herald._durable.handling import handle_in_thread
from herald._durable.ordered import ThreadLanes

from ._errors import ClientClosed, HeraldError
from ._tracing import Tracing


class SyncConsumer:
    """A consumer for threads (from :meth:`Client.consume`): an iterator and a context manager,
    or a handler run on a thread of its own. Messages settle from any thread: ``msg.ack()``.

    Example::

        with hub.consume("orders", "billing") as orders:
            for msg in orders:
                bill(msg.data)        # acked when the loop asks for the next one
    """

    def __init__(
        self, consumer: Consumer, handler: DurableHandler | None, tracing: Tracing | None = None
    ) -> None:
        self._consumer = consumer
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._lanes: ThreadLanes | None = None
        if handler is not None:
            handler = typed(handler, consumer._invalid)
            if tracing is not None:
                handler = tracing.handler(handler, "process", consumer.group, consumer.auto_ack)
            target: Callable[[], None] = functools.partial(self._run_handler, handler)
            if consumer.concurrency > 1 or consumer.ordered_by_key:
                # This thread dispatches to the lanes' worker threads.
                self._lanes = ThreadLanes(consumer, handler)
                target = self._lanes.dispatch
            self._thread = threading.Thread(
                target=target, name=f"herald-handler-{consumer.topic}", daemon=True
            )
            self._thread.start()

    @property
    def name(self) -> str:
        """The consumer's name in its group."""
        return self._consumer.name

    @property
    def stats(self) -> ConsumerStats:
        return self._consumer.stats

    @property
    def closed(self) -> bool:
        return self._consumer.closed

    @property
    def error(self) -> HeraldError | None:
        """The error that stopped this consumer (e.g. :class:`PositionTrimmed`), if any."""
        return self._consumer.error

    def _check(self) -> None:
        if os.getpid() != self._pid:
            raise ClientClosed("this consumer belongs to the parent process of a fork()")

    def next(self, timeout: float | None = None) -> DurableMessage:
        """The next message; :class:`Timeout` if none arrives in time (never acks the last)."""
        self._check()
        return self._consumer._next_sync(timeout)

    def __iter__(self) -> Iterator[DurableMessage]:
        self._check()
        while True:
            try:
                yield self._consumer._next_sync(None, iterate=True)
            except ClientClosed:
                if self._consumer._error is not None:
                    raise
                return

    def _run_handler(self, handler: Callable[[DurableMessage], Any]) -> None:
        c = self._consumer
        while True:
            try:
                msg = c._next_sync(None)
            except HeraldError:
                return
            if not handle_in_thread(c, handler, msg):
                return

    def close(self) -> None:
        """Stop; unsettled messages are handed back to the group."""
        c = self._consumer
        loop = c._loop
        if not c.closed and loop is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(c.close(), loop)
            with contextlib.suppress(concurrent.futures.TimeoutError, HeraldError):
                fut.result(10)
        self._join()

    def _join(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        if self._lanes is not None:
            self._lanes.join(5)

    def __enter__(self) -> SyncConsumer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:
            self._consumer._auto_ack_last()
        self.close()
