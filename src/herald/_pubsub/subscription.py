"""A subscription: a bounded buffer of messages with an overflow policy, iterated by the user."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

from herald._core.history import Counters, Page
from herald._core.message import DONE, Message, replier_of
from herald._core.topics import check_user_name, is_pattern, match, validate_subscription
from herald._core.typed import typed
from herald._core.wire import Foreign, check_foreign, decode_foreign
from herald._errors import (
    ClientClosed,
    ConfigurationError,
    DecodeError,
    HeraldError,
    HistoryLost,
    SlowConsumer,
    StopSubscription,
    Timeout,
)
from herald._io.waiting import pop_blocking

from .recovery import Recovery

log = logging.getLogger("herald")

Overflow = Literal["drop_oldest", "drop_newest", "disconnect"]
# A function of the message; or, typed (see _typed), of the decoded payload [and the message].
Handler = Callable[[Message], Any] | Callable[[Any], Any] | Callable[[Any, Message], Any]


class Registry(Protocol):
    totals: Counters  # recoverable topics' counters of all subscriptions

    """Where a subscription registers itself on the server (the client's subscriber)."""

    async def add(self, sub: Subscription, names: tuple[str, ...] | None = None) -> None: ...
    async def remove(self, sub: Subscription, names: tuple[str, ...] | None = None) -> None: ...
    def discard(self, sub: Subscription) -> None: ...
    async def history_topics(self, names: tuple[str, ...]) -> dict[str, str | None]: ...
    async def read_history(self, topic: str, after: int, limit: int) -> Page: ...
    def recoverable(self, topic: str) -> bool: ...


@dataclass(frozen=True)
class Gap:
    """A window in which live messages may have been missed (the connection was down).

    Every message the subscription missed was published between ``since`` and ``until``.

    Attributes:
        names: the subscription's topics and patterns.
        since: the last moment the connection was known to be receiving (seconds since the
            epoch): the publish time of the last message that arrived (by its publisher's
            clock), when the last answered probe was sent, or when the subscribe was
            confirmed, whichever is latest. A half-open link is found out only later.
        until: when the subscription was restored (the subscribe confirmed again).
        reason: what happened.
        detected: when the loss of the connection was noticed (``None``: not known).
    """

    names: tuple[str, ...]
    since: float
    until: float
    reason: str
    detected: float | None = None


def receiving_until(subscribed: float, probed: float, last: Message | None, now: float) -> float:
    """A Gap's ``since``: the last moment a connection is known to have been receiving. The
    publish time of the last message that arrived (its publisher's clock, never later than
    ``now``), when the last answered probe was sent (``probed``), or when the last confirmed
    subscribe was sent (``subscribed``), whichever is latest: the server sends in order, so
    anything published before it has arrived, and a message missed was published after it."""
    known = max(subscribed, probed)
    stamp = last.timestamp if last is not None else None
    if stamp is not None:
        known = max(known, min(stamp, now))
    return known or now


@dataclass
class SubscriptionStats:
    """Counters of one subscription."""

    delivered: int = 0
    dropped: int = 0
    gaps: int = 0
    handler_errors: int = 0
    invalid: int = 0  # payloads a typed handler refused (skipped)
    undecodable: int = 0  # foreign payloads that did not decode as ``foreign`` asked
    recovered: int = 0  # recoverable topics: messages delivered from history after a break
    duplicates: int = 0  # recoverable topics: messages received twice, delivered once
    history_lost: int = 0  # recoverable topics: HistoryLost reports
    rejected: int = 0  # recoverable topics: messages not from the topic's publish script


class _Pending:
    """A handler's result still to be awaited or replied with, queued ahead of the messages
    that came after it (see Subscription._dispatch)."""

    __slots__ = ("msg", "result")

    def __init__(self, msg: Message, result: Any) -> None:
        self.msg = msg
        self.result = result


@dataclass(frozen=True, slots=True)
class SubscriptionOptions:
    """A subscription's options, as ``subscribe`` was given them (its parameters say what each
    does, and hold the defaults): passed through whole, so that the list is not repeated."""

    max_pending: int
    overflow: Overflow
    on_gap: Callable[[Gap], Any] | None
    since: int | None
    epoch: int | None
    last: int | None
    on_history_lost: Callable[[HistoryLost], Any] | None
    error_text: bool
    foreign: Foreign


class Subscription:
    """Messages of one or more topics and patterns, in arrival order.

    An async iterator and an async context manager::

        async with hub.subscribe("news.*") as sub:
            async for msg in sub:
                ...

    The buffer holds at most ``max_pending`` messages; past that the ``overflow`` policy drops
    the oldest or the newest message (counted in ``stats.dropped``), or closes the subscription
    and raises :class:`SlowConsumer` once the buffered messages are consumed.

    Messages of recoverable topics (declared with ``history``) come in offset order with no gap
    and no duplicate across reconnects; when their history no longer reaches back, the
    iterator raises :class:`HistoryLost` at that point (or ``on_history_lost`` is called) and
    iterating again goes on with the first message still available.
    """

    def __init__(
        self,
        subscriber: Registry,
        names: tuple[str, ...],
        options: SubscriptionOptions,
        handler: Handler | None = None,
    ) -> None:
        check_foreign(options.foreign)
        if options.max_pending < 1:
            raise ConfigurationError("max_pending must be at least 1")
        if options.overflow not in ("drop_oldest", "drop_newest", "disconnect"):
            raise ConfigurationError(f"unknown overflow policy {options.overflow!r}")
        self.names = names
        self.max_pending = options.max_pending
        self.overflow = options.overflow
        self.on_gap = options.on_gap
        self.on_history_lost = options.on_history_lost
        # error replies carry the exception's text, not only its type (docs/request-reply.md)
        self.error_text = options.error_text
        self.foreign = options.foreign
        if options.foreign != "bytes":  # the default subscription's _deliver stays as it is
            self._deliver = self._deliver_foreign  # type: ignore[method-assign]
        self._start = (options.since, options.epoch, options.last)
        self._recovery: Recovery | None = None
        self.handler: Callable[[Message], Any] | None = (
            None if handler is None else typed(handler, self._invalid)
        )
        self.stats = SubscriptionStats()
        self._subscriber = subscriber
        self._buffer: deque[Message | HistoryLost | _Pending] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._parked = False  # the handler task waits with nothing buffered: see _dispatch
        self._event: threading.Event | None = None
        self._sync_waiting = False
        self._error: HeraldError | None = None
        self._closed = False
        self._started = False
        self._task: asyncio.Task[None] | None = None
        self._edits: asyncio.Lock | None = None  # add()/remove() one at a time

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Subscription:
        """Subscribe on the server; returns when every topic and pattern is confirmed."""
        if not self._started:
            self._started = True
            topics = await self._subscriber.history_topics(self.names)
            since = self._start[0]
            if since is not None and self.names[0] not in topics:
                # check_start allows since= on one topic only, never a pattern: silently
                # starting live would lose what the caller asked to resume.
                self._started = False
                raise ConfigurationError(
                    f"topic {self.names[0]!r} is not recoverable (no history policy): "
                    f"since={since} cannot resume it"
                )
            if topics:
                self._recovering().hold(topics)
            await self._subscriber.add(self)
            if topics:
                try:
                    await self._recovering().position(topics, *self._start)
                except BaseException:
                    await self.close()
                    raise
            if self.handler is not None:
                self._task = asyncio.get_running_loop().create_task(self._run_handler())
        return self

    def __await__(self) -> Any:
        return self.start().__await__()

    async def __aenter__(self) -> Subscription:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Unsubscribe; the iterator ends after the messages already buffered."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self._recovery is not None:
            self._recovery.close()
        if self._started:
            await self._subscriber.remove(self)
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    # -- changing the names -----------------------------------------------------------------

    async def add(self, *names: str) -> None:
        """Subscribe to more topics and patterns; returns once the server confirmed them.

        Names already in the subscription are skipped. A recoverable topic added (or matched by
        a pattern added) starts as the subscription's topics did without ``since``: at its last
        ``last`` messages if the subscription was made with ``last=``, else at the first message
        published after the add (``since``/``epoch`` belong to the topic they were given for).

        Raises:
            InvalidTopic, ReservedName: as ``subscribe``; nothing is added then.
            ClientClosed: the subscription is closed.
            Timeout: the server did not confirm in ``subscribe_timeout``; nothing is added.

        Example::

            sub = await hub.subscribe("orders.eu")
            await sub.add("orders.us", "refunds.*")
        """
        for name in names:
            validate_subscription(name)
            check_user_name(name)
        async with self._edit():
            new = tuple(n for n in dict.fromkeys(names) if n not in self.names)
            if not new:
                return
            topics = await self._subscriber.history_topics(new)
            rec = self._recovery
            topics = {t: p for t, p in topics.items() if rec is None or t not in rec.tracks}
            if topics:
                self._recovering().hold(topics)
            self.names = (*self.names, *new)
            try:
                await self._subscriber.add(self, new)  # undoes itself if it fails
            except BaseException:
                self._forget(new)
                raise
            if topics:
                try:
                    await self._recovering().position(topics, None, None, self._start[2])
                except BaseException:
                    await self._drop(new)
                    raise

    async def remove(self, *names: str) -> None:
        """Unsubscribe from some of the subscription's topics and patterns; it goes on with the
        others. Messages of theirs already buffered are still delivered; none arrive after.

        Raises:
            ConfigurationError: a name the subscription does not have, or every name it has
                (``close()`` it instead).
            ClientClosed: the subscription is closed.

        Example::

            await sub.remove("refunds.*")
        """
        async with self._edit():
            gone = tuple(dict.fromkeys(names))
            missing = [n for n in gone if n not in self.names]
            if missing:
                raise ConfigurationError(f"not subscribed to {', '.join(map(repr, missing))}")
            if len(gone) == len(self.names):
                raise ConfigurationError(
                    "a subscription keeps at least one topic or pattern: close() it instead"
                )
            await self._drop(gone)

    async def _drop(self, gone: tuple[str, ...]) -> None:
        """Forget ``gone`` (names of this subscription) here and on the server."""
        self._forget(gone)
        await self._subscriber.remove(self, gone)

    def _forget(self, gone: tuple[str, ...]) -> None:
        """Forget ``gone`` here: the names, and recoverable topics no other name covers."""
        self.names = tuple(n for n in self.names if n not in gone)
        if self._recovery is not None:
            for topic, track in list(self._recovery.tracks.items()):
                if topic in self.names:
                    track.pattern = None
                elif covering := [p for p in self.names if is_pattern(p) and match(p, topic)]:
                    track.pattern = covering[0]
                else:
                    self._recovery.forget(topic)

    @contextlib.asynccontextmanager
    async def _edit(self) -> AsyncIterator[None]:
        """One change of names at a time, on a started, open subscription."""
        if not self._started:
            await self.start()
        if self._edits is None:
            self._edits = asyncio.Lock()
        async with self._edits:
            if self._closed:
                raise ClientClosed("subscription closed")
            yield

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Messages buffered, not yet consumed."""
        return len(self._buffer)

    # -- called by the subscriber (event-loop thread) ----------------------------------------

    def _deliver(self, messages: list[Message]) -> None:
        if self._closed:
            return
        first = messages[0]
        if first.offset.__class__ is int or (
            # A frame without offsets on a recoverable topic: not from its script (rejected).
            (rec := self._recovery) is not None and first.topic in rec.tracks
        ):
            messages = self._recovering().accept(messages)
        self._add(messages)

    def _deliver_foreign(self, messages: list[Message]) -> None:
        """``_deliver`` of a subscription that decodes foreign payloads (``foreign``)."""
        if messages[0]._pid == b"":  # foreign (or broken): never a batch, nor recoverable
            messages = [self._foreign(m) for m in messages]
        Subscription._deliver(self, messages)

    def _foreign(self, msg: Message) -> Message:
        msg = decode_foreign(msg, self.foreign)
        if msg.decode_error is not None and msg.foreign:
            self.stats.undecodable += 1
            if self.stats.undecodable == 1 or self.stats.undecodable % 1000 == 0:
                log.warning(
                    "subscription %s: %s (%d so far)",
                    ",".join(self.names),
                    msg.decode_error,
                    self.stats.undecodable,
                )
        return msg

    def _recovering(self) -> Recovery:
        if self._recovery is None:
            registry = self._subscriber
            self._recovery = Recovery(
                self, registry.read_history, registry.totals, registry.recoverable
            )
        return self._recovery

    def _stale(self) -> None:
        """The connection is lost (called by the subscriber)."""
        if self._recovery is not None:
            self._recovery.stale()

    def _resumed(self) -> None:
        """Subscribed again after a lost connection (called by the subscriber)."""
        if self._recovery is not None:
            self._recovery.resume()

    def _lost(self, lost: HistoryLost) -> None:
        """Report lost history in sequence: to ``on_history_lost``, else raised by the iterator
        (a handler's subscription logs it)."""
        if self.on_history_lost is not None:
            try:
                self.on_history_lost(lost)
            except Exception:
                log.exception("on_history_lost callback of %s failed", self.names)
        elif self.handler is not None:
            log.error("subscription %s: %s", ",".join(self.names), lost)
        elif not self._closed:
            self._buffer.append(lost)  # past max_pending if need be: a report is never dropped
            self._wake()

    def _add(self, messages: list[Message]) -> None:
        if not messages or self._closed:
            return
        buf = self._buffer
        if self._parked and not buf:
            self._dispatch(messages)
            return
        room = self.max_pending - len(buf)
        if len(messages) > room:
            if self.overflow == "drop_newest":
                self.stats.dropped += len(messages) - max(room, 0)
                messages = messages[: max(room, 0)]
            elif self.overflow == "drop_oldest":
                excess = len(messages) - room
                if excess >= len(buf):
                    self.stats.dropped += len(buf) + len(messages) - self.max_pending
                    buf.clear()
                    messages = messages[-self.max_pending :]
                else:
                    self.stats.dropped += excess
                    for _ in range(excess):
                        buf.popleft()
            else:
                # What fits is kept (a batch frame may straddle the limit), so the consumer
                # gets exactly max_pending messages before SlowConsumer.
                buf.extend(messages[:room])
                self.stats.dropped += len(messages) - room
                self._fail(SlowConsumer(len(buf), self.stats.dropped))
                return
        buf.extend(messages)
        if self._waiter is not None or self._sync_waiting:  # a call per frame saved when busy
            self._wake()

    def _dispatch(self, messages: list[Message]) -> None:
        """Run a plain function's handler on ``messages`` now, in the connection's callback,
        while the handler task waits with nothing buffered: the order and error handling are
        the task's, one event-loop iteration sooner (about 40 us of latency on this machine).
        A request's reply is sent at once. Anything to await (a result, or room in a busy send
        buffer after a reply) is the task's work: it is queued, ahead of the rest of the
        messages, and the task takes over."""
        self._parked = False  # until the task waits again, whatever arrives is buffered
        handler = self.handler
        assert handler is not None
        stats = self.stats
        for i, msg in enumerate(messages):
            stats.delivered += 1
            try:
                result = handler(msg)
                if result is None:
                    continue
                if not inspect.isawaitable(result):
                    # A value returned for a request is its reply (docs/request-reply.md); for
                    # any other message it means nothing, as in the task.
                    if not (msg._headers and (r := replier_of(msg))):
                        continue
                    result = r.reply(msg, result, None)
                    if result is DONE:  # queued, and the send buffer has room
                        continue
            except StopSubscription:
                self._stopped()
                return
            except Exception as exc:
                self._handler_failed(msg, exc)
                continue
            self._buffer.append(_Pending(msg, result))
            self._add(messages[i + 1 :])
            self._wake()
            return
        self._parked = True

    def _handler_failed(self, msg: Message, exc: Exception) -> None:
        self.stats.handler_errors += 1
        # A request's error reply carries an id; logged here, with the traceback it points to.
        ref = (
            r.reply_error(msg, exc, self.error_text)
            if msg._headers and (r := replier_of(msg))
            else None
        )
        log.exception("handler %r failed on %r%s", self.handler, msg, _error_reply(ref))

    def _invalid(self, msg: Message, reason: str) -> None:
        """A typed handler's payload did not validate: skip it (a request gets an error reply)."""
        self.stats.invalid += 1
        ref = None
        if msg._headers and (r := replier_of(msg)):
            error = DecodeError(f"invalid payload: {reason}")
            ref = r.reply_error(msg, error, self.error_text)
        if self.stats.invalid == 1 or self.stats.invalid % 1000 == 0:
            log.warning(
                "subscription %s: skipped %r: invalid payload: %s (%d so far)%s",
                ",".join(self.names),
                msg,
                reason,
                self.stats.invalid,
                _error_reply(ref),
            )

    def _gap(self, gap: Gap) -> None:
        self.stats.gaps += 1
        if self.on_gap is None:
            recovering = self._recovery is not None and self._recovery.tracks
            log.warning(
                "subscription %s: connection lost; messages published in a window of %.3fs "
                "may be missed (%s); %s",
                ",".join(gap.names),
                gap.until - gap.since,
                gap.reason,
                "recoverable topics catch up from their history"
                if recovering
                else "live messages may be missed",
            )
            return
        try:
            self.on_gap(gap)
        except Exception:
            log.exception("on_gap callback of %s failed", gap.names)

    def _fail(self, error: HeraldError) -> None:
        if self._error is None:
            self._error = error
        if not self._closed:
            self._closed = True
            self._subscriber.discard(self)
        self._wake()

    def _stopped(self) -> None:
        """The handler raised :class:`StopSubscription`: unsubscribe; nothing buffered or
        arriving later reaches it (on the loop's thread: the unsubscribe is sent from there)."""
        self._buffer.clear()
        if not self._closed:
            self._closed = True
            if self._recovery is not None:
                self._recovery.close()
            if self._started:
                self._subscriber.discard(self)
        self._wake()

    def _finish(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)
        if self._sync_waiting and self._event is not None:
            self._event.set()

    # -- consuming ---------------------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        buf = self._buffer
        while True:
            if buf:
                msg = buf.popleft()
                if msg.__class__ is HistoryLost:
                    raise msg
                self.stats.delivered += 1
                return msg  # type: ignore[return-value]
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            if not self._started:
                await self.start()
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            await waiter

    async def next(self, timeout: float | None = None) -> Message:
        """The next message; :class:`Timeout` if none arrives in time, ``ClientClosed`` at end."""
        try:
            async with asyncio.timeout(timeout):
                return await self.__anext__()
        except TimeoutError:
            raise Timeout(f"no message within {timeout}s", timeout) from None
        except StopAsyncIteration:
            raise ClientClosed("subscription closed") from None

    def _next_sync(self, timeout: float | None) -> Message:
        """Blocking next() for a thread other than the event loop's."""
        if self._event is None:
            self._event = threading.Event()
        msg = pop_blocking(self, self._buffer, self._event, timeout, "subscription")
        if isinstance(msg, HistoryLost):
            raise msg
        self.stats.delivered += 1
        return msg  # type: ignore[return-value]  # no _Pending without a handler

    async def _run_handler(self) -> None:
        handler = self.handler
        assert handler is not None
        is_coro = inspect.iscoroutinefunction(handler)
        buf = self._buffer
        stats = self.stats
        loop = asyncio.get_running_loop()
        msg: Message
        try:
            while True:
                if not buf:
                    if self._closed:
                        if self._error is not None:
                            raise self._error
                        return
                    # While this task waits, _add runs a plain function's handler itself.
                    self._parked = not is_coro
                    waiter = self._waiter = loop.create_future()
                    try:
                        await waiter
                    finally:
                        self._parked = False
                    continue
                item = buf.popleft()  # never a report: see _lost
                try:
                    if item.__class__ is _Pending:
                        msg, result = item.msg, item.result
                    else:
                        msg = item  # type: ignore[assignment]
                        stats.delivered += 1
                        result = handler(msg)
                    if result is not None:
                        # isawaitable() is an ABC check: skipped for the None of a plain function
                        if is_coro or inspect.isawaitable(result):
                            result = await result
                        # A value returned for a request is its reply (docs/request-reply.md).
                        if result is not None and msg._headers and (r := replier_of(msg)):
                            await r.reply(msg, result, None)
                except StopSubscription:
                    self._stopped()
                    return
                except Exception as exc:
                    self._handler_failed(msg, exc)
        except HeraldError as exc:
            log.error("subscription %s ended: %s", ",".join(self.names), exc)


def _error_reply(ref: str | None) -> str:
    """What a log line says of the error reply sent, if any (its id is in the reply)."""
    return "" if ref is None else f"; error reply {ref} sent"
