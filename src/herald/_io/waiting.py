"""Waiting, on a user's thread, for what the event loop's thread puts in a buffer.

A subscription or a consumer used from a thread (``herald.Client``) is filled on the event
loop's thread; the user's thread waits on a ``threading.Event`` that the loop sets only while
someone waits (``_sync_waiting``), so that the hot path pays nothing otherwise.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Protocol, TypeVar

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
