"""Running a consumer's handler, and what its failures and ``StopSubscription`` do.

A handler runs on the consumer's own task, one message at a time (:class:`Handling`, mixed into
:class:`~herald._durable.consumer.Consumer`), on worker tasks or threads per lane
(:mod:`~herald._durable.ordered`), or on a thread of its own (``SyncConsumer``). Wherever it
runs, a failure is settled the same way (:func:`_after`): counted and logged; with ``auto_ack``,
unless the handler settled the message, it is dead-lettered on its last allowed delivery, else
nak'd with the ``backoff`` delay or, with ``ordered_by_key``, retried in place after that delay
(holding its lane and its lease) so that no later message of its key overtakes it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from herald._core.durable_message import ConsumerStats, DurableMessage
from herald._core.message import Message
from herald._core.streams import backoff_delay
from herald._errors import HeraldError, StopSubscription

from .settling import Settling

log = logging.getLogger("herald")

CLOSE_TIMEOUT = 5.0  # for the acks and the hand-back when a consumer closes


class Handled(Protocol):
    """What running a handler uses of its consumer."""

    name: str
    stats: ConsumerStats
    auto_ack: bool
    ordered_by_key: bool
    ack_wait: float
    backoff: Sequence[float] | None
    _max: int

    @property
    def closed(self) -> bool: ...
    def _stop(self, msg: DurableMessage) -> None: ...
    def _nak(self, msg: DurableMessage, delay: float | None) -> Awaitable[None]: ...
    def _term(self, msg: DurableMessage, reason: str) -> Awaitable[None]: ...


class Then(enum.Enum):
    """What follows a handler's failure on a message."""

    DONE = "done"  # on to the next message (settled as the failure says, or by the handler)
    RETRY = "retry"  # ordered_by_key: the same message again, its delay held (a new delivery)
    STOP = "stop"  # StopSubscription: the consumer stops


def _after(
    c: Handled, handler: Callable[..., Any], msg: DurableMessage, exc: Exception
) -> Then | Awaitable[None] | float:
    """``handler`` raised ``exc`` on ``msg``: the consumer stops (``STOP``) on
    :class:`StopSubscription`; any other error is counted and logged and, with ``auto_ack``
    unless the handler settled ``msg``, settles it (an Awaitable: the step started, done already
    on a thread other than the loop's): dead-lettered on its last allowed delivery, else nak'd
    with the backoff delay; with ``ordered_by_key`` that delay is returned instead (a float),
    to retry it in place."""
    if isinstance(exc, StopSubscription):
        c._stop(msg)
        return Then.STOP
    c.stats.handler_errors += 1
    log.exception("handler %r failed on %r", handler, msg)
    if not c.auto_ack or msg.settled:
        return Then.DONE
    if msg.deliveries >= c._max:
        reason = f"handler failed on delivery {msg.deliveries} of {c._max}: "
        return c._term(msg, reason + f"{type(exc).__name__}: {exc}")
    delay = float(backoff_delay(c.backoff, msg.deliveries))
    return delay if c.ordered_by_key else c._nak(msg, delay)


async def raised(
    c: Handled, handler: Callable[..., Any], msg: DurableMessage, exc: Exception
) -> Then:
    """:func:`_after` on the event loop: its settling step awaited, its delay held."""
    try:
        then = _after(c, handler, msg, exc)
        if isinstance(then, float):
            await _hold(c, msg, then)
            return Then.RETRY
        if not isinstance(then, Then):
            await then
            return Then.DONE
    except HeraldError as err:
        log.warning("consumer %s: settling %s failed: %s", c.name, msg.offset, err)
        return Then.DONE
    return then


async def _hold(c: Handled, msg: DurableMessage, delay: float) -> None:
    """Wait ``delay`` before retrying, keeping the message's lease so nobody reclaims it."""
    loop = asyncio.get_running_loop()
    end = loop.time() + delay
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(left, c.ack_wait / 2))
        await msg.in_progress()
    if delay <= 0:
        await msg.in_progress()
    msg.deliveries += 1


async def handle(
    c: Handled, handler: Callable[[DurableMessage], Any], is_coro: bool, msg: DurableMessage
) -> None:
    """``handler`` on ``msg``, on a worker task (:func:`~herald._durable.ordered.run_tasks`)."""
    msg._seen = True
    while True:
        try:
            result = handler(msg)
            if is_coro or (result is not None and inspect.isawaitable(result)):
                await result
        except Exception as exc:
            if await raised(c, handler, msg, exc) is not Then.RETRY:
                return
        else:
            if c.auto_ack and not msg.settled:
                msg.ack()
            return


def handle_in_thread(
    c: Handled, handler: Callable[[DurableMessage], Any], msg: DurableMessage
) -> bool:
    """``handler`` on ``msg``, on a handler thread (``SyncConsumer``, its lanes' workers);
    settling blocks until done, a retry's delay is slept. False: the consumer stops."""
    msg._seen = True
    while True:
        try:
            handler(msg)
        except Exception as exc:
            try:
                then = _after(c, handler, msg, exc)
                if isinstance(then, float) and _hold_in_thread(c, msg, then):
                    continue
            except HeraldError as err:
                log.warning("consumer %s: settling %s failed: %s", c.name, msg.offset, err)
                return True
            return then is not Then.STOP
        if c.auto_ack and not msg.settled:
            msg.ack()
        return True


def _hold_in_thread(c: Handled, msg: DurableMessage, delay: float) -> bool:
    """:func:`_hold` for a thread; False: the consumer closed meanwhile."""
    now = time.monotonic()
    end, renew = now + delay, now + c.ack_wait / 2
    while (left := end - now) > 0 and not c.closed:
        time.sleep(min(left, 0.25))  # short: close and Ctrl-C end it
        now = time.monotonic()
        if now >= renew:  # keep the lease, as in_progress() does
            msg.in_progress()
            renew = now + c.ack_wait / 2
    if c.closed:
        return False
    msg.in_progress()
    msg.deliveries += 1
    return True


class Handling(Settling):
    """A consumer's own handler task, and what a handler's messages lead to (mixed into
    ``Consumer``, which defines the state)."""

    auto_ack: bool
    ordered_by_key: bool
    ack_wait: float
    _closed: bool
    _stopping: asyncio.Task[None] | None

    if TYPE_CHECKING:

        @property
        def closed(self) -> bool: ...

        async def _next(self) -> DurableMessage: ...
        async def close(self) -> None: ...

    async def _run_handler(self, handler: Callable[[DurableMessage], Any]) -> None:
        """The handler, one message at a time (without ``concurrency`` nor ``ordered_by_key``:
        never a retry in place)."""
        is_coro = inspect.iscoroutinefunction(handler)
        auto_ack = self.auto_ack
        buf = self._buffer
        popleft = buf.popleft
        stats = self.stats
        outstanding = self._outstanding
        assert self._acks is not None
        ack = self._acks.add_here
        while True:
            if buf and ((w := self._room_waiter) is None or not w.done()):
                # _took() written out: no call, no coroutine per message.
                msg = popleft()
                msg._seen = True
                stats.delivered += 1
                if w is not None and len(buf) <= self._low_water:
                    self._wake_room()
            else:
                try:
                    msg = await self._next()
                except (StopAsyncIteration, HeraldError):
                    return  # closed (an error is logged by _fail)
            try:
                result = handler(msg)
                if is_coro or (result is not None and inspect.isawaitable(result)):
                    await result
            except Exception as exc:
                if await raised(self, handler, msg, exc) is Then.STOP:
                    return
            else:
                if auto_ack and not msg._settled:
                    # _ack_here() written out.
                    msg._settled = True
                    if (
                        outstanding.pop(msg._entry, None) is not None
                        and self._room_waiter is not None
                        and len(buf) <= self._low_water
                    ):
                        self._wake_room()
                    stats.acked += 1
                    ack(msg._entry)

    def _stop(self, msg: DurableMessage) -> None:
        """A handler raised :class:`StopSubscription` on ``msg``: it counts as handled (acked
        with ``auto_ack`` unless the handler settled it), then the consumer closes. From the
        loop's thread close() runs on a task of its own (the handler's may be one that close()
        cancels); from a handler thread (``SyncConsumer``) this waits for it, so that the thread
        takes nothing more."""
        if self.auto_ack and not msg._settled:
            self._ack(msg, False)
        loop = self._loop
        if self._closed or loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._stopping = loop.create_task(self.close())
            return
        fut = asyncio.run_coroutine_threadsafe(self.close(), loop)
        with contextlib.suppress(concurrent.futures.TimeoutError, HeraldError):
            fut.result(CLOSE_TIMEOUT + 5)

    def _invalid(self, msg: Message, reason: str) -> Awaitable[None]:
        """A typed handler's payload did not validate: dead-letter it, never handle it."""
        assert isinstance(msg, DurableMessage)
        self.stats.invalid += 1
        log.warning("consumer %s: %s dead-lettered: invalid payload: %s", self.name, msg, reason)
        return self._term(msg, f"invalid payload: {reason}")
