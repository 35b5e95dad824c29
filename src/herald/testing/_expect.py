"""Waiting for a message, or for none, in tests: for subscriptions and consumers, async or sync.

Each helper reads with ``next(timeout=...)`` until a message matches ``where`` (any message by
default) or the time is up; the messages that did not match are consumed and named in the
failure, so a test that fails says what arrived instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any, Protocol, TypeVar, cast

from herald._core.message import Message
from herald._errors import Timeout

M = TypeVar("M", bound=Message, covariant=True)
R = TypeVar("R")


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
    return await _run(source, _match(where, timeout))


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
    await _run(source, _no_match(where, within))


def wait_for_message_sync(
    source: SyncSource[M],
    where: Callable[[M], Any] | None = None,
    *,
    timeout: float = 5.0,
) -> M:
    """:func:`wait_for_message` for a :class:`~herald.Client`'s subscriptions and consumers."""
    return _run_sync(source, _match(where, timeout))


def assert_no_message_sync(
    source: SyncSource[M],
    where: Callable[[M], Any] | None = None,
    *,
    within: float = 0.2,
) -> None:
    """:func:`assert_no_message` for a :class:`~herald.Client`'s subscriptions and consumers."""
    _run_sync(source, _no_match(where, within))


# The two waits are written once, without I/O, as generators: each yields how long to wait for
# the next message and is sent the message (``None``: none came in time); _run and _run_sync
# read the source, with await or without.
Flow = Generator[float, M | None, R]


def _match(where: Callable[[M], Any] | None, timeout: float) -> Flow[M, M]:
    deadline = time.monotonic() + timeout
    seen: list[Message] = []
    while (left := deadline - time.monotonic()) > 0:
        msg = yield left
        if msg is None:
            break
        if where is None or where(msg):
            return msg
        seen.append(msg)
    raise AssertionError(f"no matching message within {timeout} s: {_describe(seen)}")


def _no_match(where: Callable[[M], Any] | None, within: float) -> Flow[M, None]:
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        msg = yield left
        if msg is None:
            return
        if where is None or where(msg):
            raise AssertionError(f"unexpected message on {msg.topic!r}: {msg.data!r}")


async def _run(source: AsyncSource[M], flow: Flow[M, R]) -> R:
    try:
        left = next(flow)
        while True:
            try:
                msg: M | None = await source.next(timeout=left)
            except Timeout:
                msg = None
            left = flow.send(msg)
    except StopIteration as done:
        return cast(R, done.value)


def _run_sync(source: SyncSource[M], flow: Flow[M, R]) -> R:
    try:
        left = next(flow)
        while True:
            try:
                msg: M | None = source.next(timeout=left)
            except Timeout:
                msg = None
            left = flow.send(msg)
    except StopIteration as done:
        return cast(R, done.value)
