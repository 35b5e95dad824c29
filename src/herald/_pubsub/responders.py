"""Responder groups: each request to a topic handled by one member of each group.

Keys, all tagged with the topic (one cluster slot with its channel):

- ``herald:{<topic>}:responders``, a hash: ``"<group> <member id>"`` -> the member's lease end
  (ms since the epoch). Members renew every third of :data:`LEASE`; a crashed member's field
  expires with its lease.
- ``herald:{<topic>}:requests:<group>``, a stream: the group's work queue, with one consumer
  group (``members``) whose consumers are the members.

A requester reads the registry (at most once a second per topic) and sends each request as one
``PUBLISH`` (to plain responders, as before) plus one ``XADD`` per live group, in one write. The
receiver count it checks is the ``PUBLISH``'s plus one per group, so :class:`NoResponders`
and ``request_many``'s early return keep working. Each entry holds the request's frame and
its deadline (the requester's clock, ms).

A member reads its group's stream with ``XREADGROUP`` on a connection of its own, only as many
entries as it has free handler slots (``concurrency``): an idle member takes the next request,
so work goes where there is room. After the handler it acks and deletes the entry (``XACK``,
``XDEL``). While a handler runs longer than a third of ``redeliver_after`` its entry's idle time
is reset (``XCLAIM ... JUSTID``), so a slow member keeps its request. Every member looks, every
half ``redeliver_after``, for entries idle longer than ``redeliver_after`` (``XAUTOCLAIM``): a
member that died (or whose process stalled) with a request in hand. Such a request is handled
again by the member that claims it if its deadline has not passed, else acked and dropped:
delivery is at least once while the requester still waits, and a handler may run twice for
one request (its second reply is dropped by the requester).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from herald._core.message import Message, Replier, is_request, replier_of
from herald._core.streams import tagged
from herald._core.topics import check_user_name, validate_topic
from herald._core.typed import typed
from herald._core.url import Endpoint
from herald._core.wire import Encoder, decode
from herald._errors import ClientClosed, ConfigurationError, DecodeError, HeraldError, ServerError
from herald._io.cluster import new_link
from herald._io.interface import Connection
from herald._io.sharded import shard_for_topic


class Host(Protocol):
    """What a responder needs of its client (the AsyncClient): its command connection and
    options, its reply path, and its set of responders (closed with it)."""

    _link: Connection | None
    _closed: bool
    _name: str
    _encoder: Encoder
    _link_options: dict[str, Any]
    _responders: set[Responder]
    endpoint: Endpoint | None

    async def connect(self) -> None: ...

    def _request_table(self) -> Replier: ...


log = logging.getLogger("herald")

LEASE = 6.0  # seconds a member's registration lasts without renewal
REGISTRY_REFRESH = 1.0  # seconds a requester trusts what it read of a topic's groups
MAX_QUEUE = 10_000  # entries a group's stream keeps (XADD MAXLEN ~): a group nobody reads
CONSUMER_GROUP = b"members"
_members = itertools.count()


def registry_key(topic: str) -> str:
    """The registry of a topic's group members: ``herald:{resize}:responders``."""
    return f"{tagged(topic)}:responders"


def queue_key(topic: str, group: str) -> str:
    """A group's queue of requests: ``herald:{resize}:requests:workers``."""
    return f"{tagged(topic)}:requests:{group}"


def check_group(group: str) -> None:
    """A group name: 1-200 characters, none of them whitespace, control characters or braces
    (the name is part of a key tagged with the topic)."""
    if not isinstance(group, str) or not 0 < len(group) <= 200:
        raise ConfigurationError(f"a responder group is a name of 1-200 characters: {group!r}")
    if any(c.isspace() or not c.isprintable() or c in "{}" for c in group):
        raise ConfigurationError(
            f"invalid responder group {group!r}: no whitespace, control characters or braces"
        )


def live_groups(raw: list[bytes], now_ms: float) -> list[str]:
    """The groups with a member whose lease has not ended, from the registry's HGETALL.

    >>> live_groups([b"a m1", b"9", b"b m2", b"1", b"a m3", b"9"], 5)
    ['a']
    """
    found: dict[str, None] = {}
    it = iter(raw)
    for field, until in zip(it, it, strict=True):
        if float(until) > now_ms:
            found[field.decode().rsplit(" ", 1)[0]] = None
    return list(found)


class Groups:
    """A requester's view of each topic's groups, read at most once per :data:`REGISTRY_REFRESH`."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[float, list[str]]] = {}

    def fresh(self, topic: str) -> list[str] | None:
        entry = self._known.get(topic)
        if entry is None or time.monotonic() - entry[0] > REGISTRY_REFRESH:
            return None
        return entry[1]

    async def read(self, link: Connection, topic: str) -> list[str]:
        try:
            raw = await link.execute(b"HGETALL", registry_key(topic))
        except HeraldError as exc:  # an ACL without the key: plain responders only
            log.debug("cannot read the responder groups of %r: %s", topic, exc)
            raw = []
        groups = live_groups(raw, time.time() * 1000)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[topic] = (time.monotonic(), groups)
        return groups


class Responder:
    """One member of a responder group: handles the requests to ``topic`` that its group is
    sent, each by one member. Made by :meth:`AsyncClient.respond`; stop it with
    :meth:`close` (or ``async with``).

    Example::

        async with hub.respond("resize", resize, group="workers"):
            await asyncio.Event().wait()
    """

    def __init__(
        self,
        client: Host,
        topic: str,
        handler: Callable[..., Any],
        group: str,
        concurrency: int,
        redeliver_after: float,
        error_text: bool,
        threaded: bool = False,
    ) -> None:
        validate_topic(topic)
        check_user_name(topic)
        if client._closed:
            raise ClientClosed("client closed")
        check_group(group)
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, not {concurrency!r}")
        if not redeliver_after > 0:
            raise ConfigurationError(f"redeliver_after must be positive, not {redeliver_after!r}")
        self._client = client
        self.topic = topic
        self.group = group
        self.name = f"{client._name}-{client._encoder.publisher_id.hex()[:8]}-{next(_members)}"
        self._field = f"{group} {self.name}"
        self._handler = typed(handler, self._invalid)
        # herald.Client: a plain function runs on a worker thread, not on the I/O loop
        self._threaded = threaded and not inspect.iscoroutinefunction(handler)
        self._slots = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.redeliver_after = redeliver_after
        self.error_text = error_text
        self._stream = queue_key(topic, group)
        self._read: Connection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handling: set[asyncio.Task[None]] = set()
        self._closed = False
        self.handled = 0  # requests whose handler ran here
        self.redelivered = 0  # requests taken over from a member that did not finish them
        self.expired = 0  # requests found after their requester's deadline: dropped
        client._responders.add(self)  # the client closes it with itself

    async def start(self) -> Responder:
        client = self._client
        await client.connect()
        assert client._link is not None
        assert client.endpoint is not None
        try:
            await client._link.execute(
                b"XGROUP", b"CREATE", self._stream, CONSUMER_GROUP, b"$", b"MKSTREAM"
            )
        except ServerError as exc:
            if not exc.reply.startswith("BUSYGROUP"):
                raise
        await self._renew()
        options = {**client._link_options, "probe_interval": 0, "probe_timeout": None}
        # a sharded client's member reads from its topic's shard alone
        endpoint, options = shard_for_topic(client.endpoint, options, self.topic)
        self._read = new_link(endpoint, name=f"{self.name}-respond", **options)
        await self._read.connect()
        loop = asyncio.get_running_loop()
        for coro in (self._reading(), self._leasing(), self._reclaiming()):
            task = loop.create_task(coro)
            self._tasks.add(task)
        return self

    def __await__(self) -> Any:
        return self.start().__await__()

    async def __aenter__(self) -> Responder:
        if self._read is None:
            await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, grace: float = 5.0) -> None:
        """Stop taking requests, let those in hand finish (up to ``grace`` seconds: what is
        left is handed to another member after ``redeliver_after``), leave the group."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._handling:
            await asyncio.wait(self._handling, timeout=grace)
        for task in list(self._handling):
            task.cancel()
        if self._read is not None:
            await self._read.close()
        link = self._client._link  # still open: the client closes its responders first
        if link is not None:
            with contextlib.suppress(HeraldError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await link.execute(b"HDEL", registry_key(self.topic), self._field)
                    # Nothing left in hand (the read connection is closed: nothing more can
                    # be delivered to this member): leave no trace in the group. Entries it
                    # still holds stay pending, for another member to take.
                    held = await link.execute(
                        b"XPENDING", self._stream, CONSUMER_GROUP, b"-", b"+", 1, self.name
                    )
                    if not held:
                        await link.execute(
                            b"XGROUP", b"DELCONSUMER", self._stream, CONSUMER_GROUP, self.name
                        )
        self._client._responders.discard(self)

    # -- membership ----------------------------------------------------------------------------

    async def _renew(self) -> None:
        link = self._client._link
        assert link is not None
        until = int((time.time() + LEASE) * 1000)
        await link.execute(b"HSET", registry_key(self.topic), self._field, until)

    async def _leasing(self) -> None:
        while True:
            await asyncio.sleep(LEASE / 3)
            try:
                await self._renew()
                await self._forget_dead()
            except HeraldError as exc:  # the link reconnects by itself
                log.warning("responder %s: lease not renewed: %s", self.name, exc)

    async def _forget_dead(self) -> None:
        """Remove the registrations of members (of any group of the topic) whose lease ended
        a lease ago: crashed members would otherwise stay in the registry for good."""
        link = self._client._link
        assert link is not None
        raw = await link.execute(b"HGETALL", registry_key(self.topic))
        cutoff = (time.time() - LEASE) * 1000
        it = iter(raw)
        dead = [field for field, until in zip(it, it, strict=True) if float(until) < cutoff]
        if dead:
            await link.execute(b"HDEL", registry_key(self.topic), *dead)

    # -- taking requests -----------------------------------------------------------------------

    async def _reading(self) -> None:
        link = self._read
        assert link is not None
        while True:
            await self._slots.acquire()
            free = 1
            while free < self.concurrency and not self._slots.locked():
                await self._slots.acquire()
                free += 1
            try:
                reply = await link.execute(
                    b"XREADGROUP", b"GROUP", CONSUMER_GROUP, self.name, b"COUNT", free,
                    b"BLOCK", 1000, b"STREAMS", self._stream, b">",
                )  # fmt: skip
            except ServerError as exc:
                if exc.reply.startswith("NOGROUP"):  # the stream was deleted: make it again
                    with contextlib.suppress(ServerError):
                        await link.execute(
                            b"XGROUP", b"CREATE", self._stream, CONSUMER_GROUP, b"$", b"MKSTREAM"
                        )
                else:
                    log.warning("responder %s: %s", self.name, exc)
                    await asyncio.sleep(0.5)
                reply = None
            except (HeraldError, OSError) as exc:
                log.debug("responder %s: read failed: %s", self.name, exc)
                await asyncio.sleep(0.1)
                reply = None
            entries = reply[0][1] if reply else []
            for _ in range(free - len(entries)):
                self._slots.release()
            for entry_id, fields in entries:
                self._spawn(entry_id, fields)

    async def _reclaiming(self) -> None:
        link = self._client._link
        assert link is not None
        idle_ms = int(self.redeliver_after * 1000)
        while True:
            await asyncio.sleep(self.redeliver_after / 2)
            # One at a time, each once a handler slot is free. XAUTOCLAIM looks at no more
            # than 10 pending entries per COUNT: follow its cursor past those other members
            # hold (kept fresh by _keep) to the whole list's end.
            cursor: bytes = b"0-0"
            while True:
                await self._slots.acquire()
                try:
                    reply = await link.execute(
                        b"XAUTOCLAIM", self._stream, CONSUMER_GROUP, self.name, idle_ms, cursor,
                        b"COUNT", 1,
                    )  # fmt: skip
                except HeraldError as exc:
                    log.debug("responder %s: XAUTOCLAIM failed: %s", self.name, exc)
                    reply = None
                # Entries deleted meanwhile (XDEL) come back without fields: nothing to do.
                entries = [e for e in (reply[1] if reply else []) if e and e[1] is not None]
                cursor = reply[0] if reply else b"0-0"
                if not entries:
                    self._slots.release()
                    if cursor == b"0-0":
                        break
                    continue
                self.redelivered += 1
                self._spawn(*entries[0])

    def _spawn(self, entry_id: bytes, fields: list[bytes]) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(entry_id, fields))
        self._handling.add(task)
        task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._handling.discard(task)
        self._slots.release()

    async def _handle(self, entry_id: bytes, fields: list[bytes]) -> None:
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        frame = values.get(b"f", b"")
        deadline = float(values.get(b"d", 0))
        settle = True
        try:
            if time.time() * 1000 > deadline:
                self.expired += 1
                return
            messages = decode(self.topic, frame)
            if len(messages) != 1 or not is_request(messages[0].headers):
                log.warning("responder %s: entry %r is not a request", self.name, entry_id)
                return
            msg = messages[0]
            msg._replier = self._client._request_table()
            keeper = asyncio.get_running_loop().create_task(self._keep(entry_id))
            try:
                await self._run(msg)
            finally:
                keeper.cancel()
        except asyncio.CancelledError:
            settle = False  # closing: the entry stays pending, for another member to take
            raise
        finally:
            if settle:
                self._settle(entry_id)

    async def _run(self, msg: Message) -> None:
        self.handled += 1
        replier = replier_of(msg)
        assert replier is not None
        try:
            if self._threaded:
                result = await asyncio.to_thread(self._handler, msg)
            else:
                result = self._handler(msg)
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                await replier.reply(msg, result, None)
        except Exception as exc:
            ref = replier.reply_error(msg, exc, self.error_text)
            sent = "" if ref is None else f"; error reply {ref} sent"
            log.exception("responder %r failed on %r%s", self._handler, msg, sent)

    def _invalid(self, msg: Message, reason: str) -> None:
        replier = replier_of(msg)
        if replier is not None:
            replier.reply_error(msg, DecodeError(f"invalid payload: {reason}"), self.error_text)

    async def _keep(self, entry_id: bytes) -> None:
        """Reset the entry's idle time while its handler runs: a slow member keeps it."""
        link = self._client._link
        assert link is not None
        while True:
            await asyncio.sleep(self.redeliver_after / 3)
            with contextlib.suppress(HeraldError):
                await link.execute(
                    b"XCLAIM", self._stream, CONSUMER_GROUP, self.name, 0, entry_id, b"JUSTID"
                )

    def _settle(self, entry_id: bytes) -> None:
        link = self._client._link
        if link is None:
            return
        try:
            link.execute(b"XACK", self._stream, CONSUMER_GROUP, entry_id).add_done_callback(
                _retrieve
            )
            link.execute(b"XDEL", self._stream, entry_id).add_done_callback(_retrieve)
        except ClientClosed:
            pass  # closing: the entry stays pending and is handed to another member


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and (exc := fut.exception()) is not None:
        log.debug("responder: settling an entry failed: %s", exc)


class SyncResponder:
    """:class:`Responder` for threads: ``close()`` or ``with``."""

    def __init__(self, inner: Responder, call: Callable[[Any], Any]) -> None:
        self._inner = inner
        self._call = call

    @property
    def handled(self) -> int:
        return self._inner.handled

    def close(self) -> None:
        self._call(self._inner.close())

    def __enter__(self) -> SyncResponder:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
