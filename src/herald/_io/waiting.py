"""Waiting for what the event loop's thread puts in a buffer: on the loop, or on a user's thread.

A subscription or a consumer is filled on the event loop's thread (:class:`Buffered`). Its
reader waits there on a future, or, used from a thread (``herald.Client``), on a
``threading.Event`` that the loop sets only while someone waits (``_sync_waiting``), so that
the hot path pays nothing otherwise (:func:`pop_blocking`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from herald._errors import ClientClosed, HeraldError, Timeout

T = TypeVar("T")


class Waited(Protocol):
    """The owner of the buffer: closed or not, why, and whether a thread waits."""

    _closed: bool
    _error: HeraldError | None
    _sync_waiting: bool


def pop_blocking(
    owner: Waited, buf: deque[T], event: threading.Event, timeout: float | None, what: str
) -> T:
    """The buffer's first item, waiting up to ``timeout`` seconds for one.

    Raises:
        Timeout: nothing came within ``timeout``.
        ClientClosed: the owner was closed (or the error it was closed with).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return buf.popleft()
        except IndexError:
            pass
        if owner._closed:
            if owner._error is not None:
                raise owner._error
            raise ClientClosed(f"{what} closed")
        owner._sync_waiting = True
        event.clear()
        if buf or owner._closed:
            continue
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            owner._sync_waiting = False
            raise Timeout(f"no message within {timeout}s", timeout)
        # Short waits keep Ctrl-C responsive in the main thread.
        event.wait(0.25 if remaining is None else min(remaining, 0.25))
        owner._sync_waiting = False


async def within(item: Awaitable[T], timeout: float | None, what: str) -> T:
    """``item`` (the reader's next one), waiting up to ``timeout`` seconds on the event loop.

    Raises:
        Timeout: nothing came within ``timeout``.
        ClientClosed: the end of iteration (``what`` was closed).
    """
    try:
        async with asyncio.timeout(timeout):
            return await item
    except TimeoutError:
        raise Timeout(f"no message within {timeout}s", timeout) from None
    except StopAsyncIteration:
        raise ClientClosed(f"{what} closed") from None


class Buffered:
    """What a subscription and a consumer share: started on first use, or by ``await`` or
    ``async with`` (closed at the end of the block); their reader woken when the loop's thread
    buffers something or closes them."""

    if TYPE_CHECKING:

        async def start(self) -> Self: ...
        async def close(self) -> None: ...

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None  # a reader on the loop
        # A reader on a thread waits on it (_sync_waiting); made when one first does, as a
        # subscription used only on the loop need not carry its locks (~1 KB).
        self._event: threading.Event | None = None
        self._sync_waiting = False
        self._started = False
        self._closed = False
        self._error: HeraldError | None = None  # raised to the reader once closed

    def __await__(self) -> Generator[Any, None, Self]:
        return self.start().__await__()

    # Router (_router.py) has its own: it ends with stop(), and it is no buffer.
    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)
        if self._sync_waiting and self._event is not None:
            self._event.set()

    def _pop_blocking(self, buf: deque[T], timeout: float | None, what: str) -> T:
        """:func:`pop_blocking` on this reader's buffer."""
        if self._event is None:
            self._event = threading.Event()
        return pop_blocking(self, buf, self._event, timeout, what)

    async def _empty(self) -> None:
        """Nothing buffered: the end of iteration once closed (or the error that closed it);
        started if it was not; else wait until woken. Then the reader looks again."""
        if self._closed:
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        if not self._started:
            await self.start()
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        await waiter
