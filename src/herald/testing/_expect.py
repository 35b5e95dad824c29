"""Waiting for a message, or for none, in tests: for subscriptions and consumers, async or sync.

Each helper reads with ``next(timeout=...)`` until a message matches ``where`` (any message by
default) or the time is up; the messages that did not match are consumed and named in the
failure, so a test that fails says what arrived instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from herald._core.message import Message
from herald._errors import Timeout

M = TypeVar("M", bound=Message, covariant=True)


class AsyncSource(Protocol[M]):
    """A :class:`~herald.Subscription` or a :class:`~herald.Consumer`."""

    async def next(self, timeout: float | None = None) -> M: ...


class SyncSource(Protocol[M]):
    """A :class:`~herald.SyncSubscription` or a :class:`~herald.SyncConsumer`."""

    def next(self, timeout: float | None = None) -> M: ...


def _describe(seen: list[Message]) -> str:
    if not seen:
        return "nothing arrived"
    shown = ", ".join(f"{m.topic}: {m.data!r}" for m in seen[:10])
    more = f" and {len(seen) - 10} more" if len(seen) > 10 else ""
    return f"{len(seen)} other message(s) arrived: {shown}{more}"


async def wait_for_message(
    source: AsyncSource[M],
    where: Callable[[M], Any] | None = None,
    *,
    timeout: float = 5.0,
) -> M:
    """The first message from ``source`` for which ``where(msg)`` is true (any message when
    ``where`` is ``None``), within ``timeout`` seconds.

    Raises:
        AssertionError: none matched in time (the message says what arrived instead).

    Example::

        msg = await wait_for_message(sub, lambda m: m.data["id"] == 7)
    """
    deadline = time.monotonic() + timeout
    seen: list[Message] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await source.next(timeout=left)
        except Timeout:
            break
        if where is None or where(msg):
            return msg
        seen.append(msg)
    raise AssertionError(f"no matching message within {timeout} s: {_describe(seen)}")


async def assert_no_message(
    source: AsyncSource[M],
    where: Callable[[M], Any] | None = None,
    *,
    within: float = 0.2,
) -> None:
    """Assert that no message (none for which ``where(msg)`` is true) arrives on ``source``
    within ``within`` seconds; the others that arrive meanwhile are consumed.

    Raises:
        AssertionError: one did, named in the message.
    """
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await source.next(timeout=left)
        except Timeout:
            return
        if where is None or where(msg):
            raise AssertionError(f"unexpected message on {msg.topic!r}: {msg.data!r}")


def wait_for_message_sync(
    source: SyncSource[M],
    where: Callable[[M], Any] | None = None,
    *,
    timeout: float = 5.0,
) -> M:
    """:func:`wait_for_message` for a :class:`~herald.Client`'s subscriptions and consumers."""
    deadline = time.monotonic() + timeout
    seen: list[Message] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = source.next(timeout=left)
        except Timeout:
            break
        if where is None or where(msg):
            return msg
        seen.append(msg)
    raise AssertionError(f"no matching message within {timeout} s: {_describe(seen)}")


def assert_no_message_sync(
    source: SyncSource[M],
    where: Callable[[M], Any] | None = None,
    *,
    within: float = 0.2,
) -> None:
    """:func:`assert_no_message` for a :class:`~herald.Client`'s subscriptions and consumers."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = source.next(timeout=left)
        except Timeout:
            return
        if where is None or where(msg):
            raise AssertionError(f"unexpected message on {msg.topic!r}: {msg.data!r}")
