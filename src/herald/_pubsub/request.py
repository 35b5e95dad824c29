"""Request/reply on live topics: the client's inbox, its pending-request table, and replies.

A client that sends a request subscribes once (lazily) to its inbox, the channel
``_herald.inbox.<128 random bits in hex>``, on its existing subscriber connection. A request is a
live message with two reserved headers, ``herald-reply-to`` (the inbox) and ``herald-request-id``
(96 random bits in hex); it is published with a confirmation, so that a receiver count of 0 raises
:class:`NoResponders` at once. A reply is an ordinary message published to the inbox with the same
``herald-request-id``, so any client (in any language) can answer. A reply that finds no pending
request (it timed out, was cancelled, or already got its answer) is dropped and counted.

Neither name can be derived from what a client publishes (its message ids carry its publisher id,
not its inbox), and users may not publish or subscribe to the inbox namespace, so a reply cannot be
forged or read through Herald. A responder answers only a reply address in that namespace: a
request cannot make it publish anywhere else. An error reply says the exception's type and an
error id, not its text, unless the responder's subscription opts in (``error_text=True``).

The semantics and the failure modes are described in ``docs/request-reply.md``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Generator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from herald._core.message import DONE, REPLY_TO, TYPE_HEADER, Message
from herald._core.topics import INBOX_PREFIX, check_headers, check_user_name
from herald._core.typed import message_type
from herald._errors import (
    ClientClosed,
    ConfigurationError,
    HeraldError,
    NoResponders,
    ResponderFailed,
)
from herald._errors import Timeout as HeraldTimeout
from herald._io.interface import Connection
from herald._io.link import Link

from .responders import MAX_QUEUE, Groups, queue_key
from .subscription import Gap, Registry, Subscription, SubscriptionOptions

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from herald._core.history import HistoryTopic
    from herald._core.streams import DurableTopic
    from herald._models import PubAck

    from .subscriber import Subscriber

log = logging.getLogger("herald")

REQUEST_ID = "herald-request-id"
ERROR = "herald-error"
ERROR_ID = "herald-error-id"
_PUBLISH = b"PUBLISH"
MAX_ERROR_TEXT = 1000  # characters of "Type: message" sent back when a handler raises


class Host(Protocol):
    """What request/reply needs of its client (the AsyncClient): its connections, how it
    routes and encodes a topic, and its publish counter. (Its signatures are the parts of the
    client's that this layer uses: it names them, not the client above it.)"""

    _link: Connection | None
    _subscriber: Subscriber | None
    _closed: bool
    _tracing: Any  # herald._tracing.Tracing | None: the facade's, above this layer
    published: int
    batch: bool
    publish_timeout: float | None

    async def connect(self) -> None: ...

    def _prefix(
        self, topic: str
    ) -> tuple[bytes, bool, DurableTopic | None, HistoryTopic | None]: ...

    def _declared_bare(self, topic: str) -> bool: ...

    def _frame(
        self, topic: str, data: Any, headers: Mapping[str, str] | None
    ) -> tuple[bytes, bytes, bool]: ...

    def _publish_threadsafe(
        self, topic: str, data: Any, headers: Mapping[str, str] | None, confirm: bool | None
    ) -> Coroutine[Any, Any, PubAck | None] | None: ...


class Requests:
    """One client's requests (its inbox and pending table) and the replies it sends as responder."""

    def __init__(self, client: Host, registry: Registry) -> None:
        self._client = client
        self._registry = registry
        # Random, not the publisher id: whoever sees this client's messages cannot name its inbox.
        self.inbox = INBOX_PREFIX + os.urandom(16).hex()
        self._pending: dict[str, asyncio.Future[Message] | _Gather] = {}
        self._sub: _InboxSubscription | None = None
        self._starting: asyncio.Task[None] | None = None
        self.late_replies = 0  # replies that found no pending request: dropped
        self._groups = Groups()  # each topic's responder groups, as last read

    @property
    def pending(self) -> int:
        """Requests waiting for replies."""
        return len(self._pending)

    # -- requester side ----------------------------------------------------------------------

    async def request(
        self, topic: str, data: Any, timeout: float, headers: Mapping[str, str] | None
    ) -> Message:
        loop, deadline, groups = await self._begin(topic, timeout, headers)
        rid = _request_id()
        fut: asyncio.Future[Message] = loop.create_future()
        self._pending[rid] = fut
        try:
            # One timer and one wake-up per request: the server's receiver count is checked by a
            # callback (it may arrive before or after the reply, on the other connection).
            ack = self._publish(topic, data, headers, rid, groups, timeout)
            ack.add_done_callback(partial(_acked, fut, topic))
            timer = loop.call_at(deadline, _expired, fut, topic, timeout)
            try:
                reply = await fut
            finally:
                timer.cancel()
        finally:
            # Whatever ended the wait (reply, timeout, cancellation, error), the entry goes:
            # a reply arriving later finds nothing and is dropped.
            self._pending.pop(rid, None)
        error = reply.headers.get(ERROR)
        if error is not None:
            raise ResponderFailed(topic, error, reply)
        return reply

    async def request_many(
        self,
        topic: str,
        data: Any,
        max_replies: int | None,
        timeout: float,
        headers: Mapping[str, str] | None,
    ) -> list[Message]:
        if max_replies is not None and max_replies < 1:
            raise ConfigurationError("max_replies must be at least 1 (or None)")
        loop, deadline, groups = await self._begin(topic, timeout, headers)
        rid = _request_id()
        gather = _Gather(loop.create_future(), topic, timeout, max_replies)
        self._pending[rid] = gather
        try:
            self._publish(topic, data, headers, rid, groups, timeout).add_done_callback(
                gather.acked
            )
            timer = loop.call_at(deadline, gather.expire)
            try:
                await gather.done
            finally:
                timer.cancel()
        finally:
            self._pending.pop(rid, None)
        return gather.replies[:max_replies]

    async def _begin(
        self, topic: str, timeout: float, headers: Mapping[str, str] | None
    ) -> tuple[asyncio.AbstractEventLoop, float, list[str]]:
        """Check a request, make the client ready to send it (inbox subscribed, connections
        up) and find the topic's responder groups: (loop, deadline, groups)."""
        _check(topic, headers, timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self._ready():
            await self._prepare(topic, deadline, timeout)
        groups = self._groups.fresh(topic)
        if groups is None:
            groups = await self._read_groups(topic, deadline, timeout)
        return loop, deadline, groups

    def _ready(self) -> bool:
        """True when a request can go out at once: the inbox listens, both connections are up."""
        sub = self._sub
        link = self._client._link
        subscriber = self._client._subscriber
        return (
            sub is not None
            and not sub.closed
            and link is not None
            and link.connected
            and subscriber is not None
            and subscriber.link_for(self.inbox).connected
        )

    async def _prepare(self, topic: str, deadline: float, timeout: float) -> None:
        """Subscribe the inbox (first request) and wait for both connections, until deadline."""
        client = self._client
        try:
            async with asyncio.timeout_at(deadline):
                if client._closed:
                    raise ClientClosed("client closed")
                await client.connect()
                sub = self._sub
                if sub is None or sub.closed:
                    await self._start()
                # A reply published while the inbox is not subscribed would be lost: wait for
                # the reconnect (which resubscribes before it reports the connection up).
                await self._inbox_link().wait_connected(None)
                assert client._link is not None
                # As a confirmed publish does: a request is either sent now or refused, never
                # sent later by surprise.
                await client._link.for_topic(topic).wait_connected(None)
        except TimeoutError:
            raise HeraldTimeout(
                f"request on {topic!r} not sent within {timeout}s: the connection or the "
                "inbox subscription was not ready",
                timeout,
            ) from None

    async def _read_groups(self, topic: str, deadline: float, timeout: float) -> list[str]:
        """The topic's responder groups (read at most once a second per topic)."""
        link = self._client._link
        assert link is not None
        try:
            async with asyncio.timeout_at(deadline):
                return await self._groups.read(link, topic)
        except TimeoutError:
            raise HeraldTimeout(
                f"request on {topic!r} not sent within {timeout}s", timeout
            ) from None

    def _publish(
        self,
        topic: str,
        data: Any,
        headers: Mapping[str, str] | None,
        rid: str,
        groups: list[str] | None = None,
        timeout: float = 0.0,
    ) -> asyncio.Future[Any]:
        """Queue the request's PUBLISH, and an XADD to each responder group's queue; the future
        resolves with the server's receiver count (plus one per group)."""
        client = self._client
        _, bare, durable, history = client._prefix(topic)
        bare = bare and client._declared_bare(topic)  # not the client's envelope=False
        if bare or durable is not None or history is not None:
            # bare: no envelope, so no headers to carry the reply address; durable and
            # recoverable: every publish must also be stored, which a request (live, at most
            # once) is not.
            kind = "bare" if bare else "durable" if durable else "recoverable"
            raise ConfigurationError(f"topic {topic!r} is {kind}: requests need a live topic")
        h = {REPLY_TO: self.inbox, REQUEST_ID: rid}
        if headers:
            h = {**headers, **h}
        if (mtype := message_type(data)) is not None:  # a Struct's or a model's: see publish
            h[TYPE_HEADER] = mtype
        frame = client._frame(topic, data, h)[1]
        link = client._link
        assert link is not None
        ack = link.execute(_PUBLISH, topic, frame)
        client.published += 1
        if groups:
            deadline_ms = int((time.time() + timeout) * 1000)
            added = [
                link.execute(
                    b"XADD",
                    queue_key(topic, group),
                    b"MAXLEN",
                    b"~",
                    MAX_QUEUE,
                    b"*",
                    b"f",
                    frame,
                    b"d",
                    deadline_ms,
                )
                for group in groups
            ]
            return _counted(ack, added)
        return ack

    def _inbox_link(self) -> Link:
        subscriber = self._client._subscriber
        if subscriber is None:
            raise ClientClosed("client closed")
        return subscriber.link_for(self.inbox)

    async def _start(self) -> None:
        # Concurrent first requests share one SUBSCRIBE; a caller that is cancelled or times out
        # does not cancel it for the others.
        if self._starting is None:
            task = asyncio.get_running_loop().create_task(self._subscribe())
            task.add_done_callback(self._started)
            self._starting = task
        await asyncio.shield(self._starting)

    async def _subscribe(self) -> None:
        sub = _InboxSubscription(self._registry, self.inbox, self)
        await sub.start()
        self._sub = sub

    def _started(self, task: asyncio.Task[None]) -> None:
        self._starting = None  # failed or done: a later request checks self._sub again
        if not task.cancelled():
            task.exception()  # retrieved here; the callers that awaited it have raised it

    def _on_replies(self, messages: list[Message]) -> None:
        """Route replies (event-loop thread, called by the subscriber's dispatch)."""
        pending = self._pending
        for msg in messages:
            rid = msg.headers.get(REQUEST_ID, "")
            waiter = pending.get(rid)
            if waiter is None:
                self.late_replies += 1
            elif isinstance(waiter, _Gather):
                waiter.add(msg)
            else:
                del pending[rid]  # one answer per request: any other reply is late
                if not waiter.done():
                    waiter.set_result(msg)

    def _close(self, error: HeraldError) -> None:
        """The inbox is gone (client closed, or the ACL refused it): wake every waiter."""
        for waiter in list(self._pending.values()):
            fut = waiter.done if isinstance(waiter, _Gather) else waiter
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()

    # -- responder side ----------------------------------------------------------------------

    def reply(
        self,
        request: Message,
        data: Any,
        headers: Mapping[str, str] | None,
        error: str | None = None,
        error_id: str | None = None,
    ) -> Awaitable[None]:
        """Publish a reply to ``request``'s inbox; see :meth:`Message.reply`."""
        tracing = self._client._tracing
        if tracing is None or not tracing.active():
            return self._reply(request, data, headers, error, error_id)
        with tracing.replying(request, request.headers.get(REPLY_TO, "")) as span:
            if error is not None:
                span.set_attribute("error.type", error.partition(":")[0])
            return self._reply(request, data, tracing.inject(headers), error, error_id)

    def _reply(
        self,
        request: Message,
        data: Any,
        headers: Mapping[str, str] | None,
        error: str | None,
        error_id: str | None,
    ) -> Awaitable[None]:
        to = request.headers.get(REPLY_TO)
        rid = request.headers.get(REQUEST_ID)
        if not to or rid is None:
            raise HeraldError(f"{request!r} is not a request: it has no {REPLY_TO} header")
        if not to.startswith(INBOX_PREFIX):
            # Only a reply inbox: a request must not make a responder publish, with the
            # responder's access, to a topic its sender names.
            raise HeraldError(f"{request!r} is not a request: {REPLY_TO} is not an inbox")
        if headers:
            check_headers(headers)
            h = {**headers, REQUEST_ID: rid}
        else:
            h = {REQUEST_ID: rid}
        if error is not None:
            h[ERROR] = error
            if error_id is not None:
                h[ERROR_ID] = error_id
        elif (mtype := message_type(data)) is not None:
            h[TYPE_HEADER] = mtype
        client = self._client
        link = client._link
        if link is None:
            raise ClientClosed("client is not connected")
        try:
            on_loop = asyncio.get_running_loop() is link.loop
        except RuntimeError:
            on_loop = False
        if not on_loop:
            # A user thread (herald.Client's handler threads among them): blocks while the send
            # buffer is full, as Client.publish does; nothing is left to await.
            client._publish_threadsafe(to, data, h, None)
            return DONE
        # Queued at once, even if nobody awaits the result: awaiting only applies backpressure.
        pfx, frame, bare = client._frame(to, data, h)
        busy = link.publish_nowait(pfx, frame, client.batch and not bare)
        client.published += 1
        if not busy and not link.blocked:
            return DONE  # nothing to wait for (what awaiting a _Queued would find out)
        return _Queued(link, client.publish_timeout, busy)

    def reply_error(self, request: Message, exc: BaseException, text: bool = False) -> str | None:
        """Answer ``request`` with an error reply after its handler raised (never raises); the
        error id sent, for the caller's log line with the exception, or ``None`` if not sent.

        The reply names the exception's type and carries the id; the exception's text goes to
        the requester only with ``text``.
        """
        ref = os.urandom(8).hex()
        name = type(exc).__name__
        error = f"{name}: {exc}"[:MAX_ERROR_TEXT] if text else name
        try:
            self.reply(request, b"", None, error, ref)
        except Exception as send_exc:
            log.warning("could not send the error reply to %r: %s", request, send_exc)
            return None
        return ref


def _acked(waiter: asyncio.Future[Message], topic: str, ack: asyncio.Future[Any]) -> None:
    """The server's answer to a request's PUBLISH: its receiver count, or an error."""
    error = _outcome(ack)
    if waiter.done():
        return
    if isinstance(error, BaseException):
        waiter.set_exception(error)
    elif not error:
        waiter.set_exception(NoResponders(topic))


def _counted(publish: asyncio.Future[Any], added: list[asyncio.Future[Any]]) -> asyncio.Future[Any]:
    """The PUBLISH's receiver count plus one per responder group the request was queued for."""
    total: asyncio.Future[Any] = publish.get_loop().create_future()
    parts = [publish, *added]

    def done(_: asyncio.Future[Any]) -> None:
        if total.done() or not all(p.done() for p in parts):
            return
        receivers = _outcome(publish)
        for part in added:  # an XADD's reply is the entry id: only its error matters
            error = None if part.cancelled() else part.exception()
            if error is not None:
                total.set_exception(error)
                return
        if isinstance(receivers, BaseException):
            total.set_exception(receivers)
        else:
            total.set_result(receivers + len(added))

    for part in parts:
        part.add_done_callback(done)
    return total


def _expired(waiter: asyncio.Future[Message], topic: str, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(
            HeraldTimeout(f"no reply to the request on {topic!r} within {timeout}s", timeout)
        )


def _outcome(ack: asyncio.Future[Any]) -> int | BaseException:
    """The receiver count of a PUBLISH, or why there is none (always retrieved: no warning)."""
    if ack.cancelled():
        return ClientClosed("connection closed")
    error = ack.exception()
    return error if error is not None else int(ack.result())


class _Gather:
    """The replies of one ``request_many``."""

    __slots__ = ("done", "expected", "limit", "replies", "timeout", "topic")

    def __init__(
        self, done: asyncio.Future[None], topic: str, timeout: float, limit: int | None
    ) -> None:
        self.done = done
        self.topic = topic
        self.timeout = timeout
        self.limit = limit
        self.expected: int | None = None
        self.replies: list[Message] = []

    def add(self, msg: Message) -> None:
        self.replies.append(msg)
        self._check()

    def acked(self, ack: asyncio.Future[Any]) -> None:
        receivers = _outcome(ack)
        if self.done.done():
            return
        if isinstance(receivers, BaseException):
            self.done.set_exception(receivers)
        elif not receivers:
            self.done.set_exception(NoResponders(self.topic))
        else:
            # Each receiver of the request answers at most once in the usual case: once that
            # many replies are in, waiting for the timeout would only add latency.
            self.expected = receivers
            self._check()

    def expire(self) -> None:
        if self.done.done():
            return
        if self.expected is None and not self.replies:
            # Not even the server's confirmation came: nothing is known.
            self.done.set_exception(
                HeraldTimeout(
                    f"request on {self.topic!r} not confirmed within {self.timeout}s",
                    self.timeout,
                )
            )
        else:
            self.done.set_result(None)  # the time is up: what arrived is the answer

    def _check(self) -> None:
        bound = self.limit
        if self.expected is not None and (bound is None or self.expected < bound):
            bound = self.expected
        if bound is not None and len(self.replies) >= bound and not self.done.done():
            self.done.set_result(None)


# The inbox has no buffer (replies go straight to the pending table), no start position, no
# handler: nothing of a user's subscription applies.
_INBOX = SubscriptionOptions(
    max_pending=1,
    overflow="drop_oldest",
    on_gap=None,
    since=None,
    epoch=None,
    last=None,
    on_history_lost=None,
    error_text=False,
    foreign="bytes",
)


class _InboxSubscription(Subscription):
    """The inbox's channel on the subscriber connection.

    It is a subscription so that the subscriber resubscribes it after a reconnect like any other,
    but it has no buffer and is never shown as a user's: replies go straight to the pending
    table, and its gaps are not reported (requests in flight during one time out).
    """

    def __init__(self, registry: Registry, channel: str, requests: Requests) -> None:
        super().__init__(registry, (channel,), _INBOX)
        self._requests = requests

    def _deliver(self, messages: list[Message]) -> None:
        self._requests._on_replies(messages)

    def _gap(self, gap: Gap) -> None:
        log.debug(
            "request inbox was disconnected %.3fs: replies sent meanwhile are lost",
            gap.until - gap.since,
        )

    def _fail(self, error: HeraldError) -> None:
        super()._fail(error)
        self._requests._close(error)

    def _finish(self) -> None:
        super()._finish()
        self._requests._close(ClientClosed("client closed"))


class _Queued:
    """What :meth:`Requests.reply` returns when the send buffer is busy or full (else ``DONE``):
    the reply is already queued; awaiting it waits for room in the send buffer. Not a
    coroutine, so that leaving it unawaited warns about nothing.
    """

    __slots__ = ("_busy", "_link", "_timeout")

    def __init__(self, link: Connection, timeout: float | None, busy: bool) -> None:
        self._link = link
        self._timeout = timeout
        self._busy = busy

    def __await__(self) -> Generator[Any, None, None]:
        link = self._link
        if link.blocked:
            try:
                yield from link.wait_writable(self._timeout).__await__()
            except HeraldTimeout:
                # The reply is queued whatever happens here: a full buffer is not the
                # responder's failure, and must not turn into a second, error reply.
                log.warning("send buffer still full %ss after queuing a reply", self._timeout)
        elif self._busy:
            yield  # a responder in a tight loop still lets other tasks run (as publish does)


def _check(topic: str, headers: Mapping[str, str] | None, timeout: float) -> None:
    # A request into the inbox namespace would land in another client's inbox as a reply.
    check_user_name(topic)
    if headers:
        check_headers(headers)
    if not timeout > 0:
        raise ConfigurationError(f"timeout must be positive, not {timeout!r}")


def _request_id() -> str:
    """96 random bits: nobody who has seen other requests can guess the next one's id."""
    return os.urandom(12).hex()
