"""A consumer of a durable topic: one consumer (a stable name) in one consumer group.

- **Reading**, on a connection of its own (XREADGROUP BLOCK holds it): first this consumer's
  own pending entries (a restarted consumer of the same name resumes), then new ones (``>``);
  never more than ``max_ack_pending`` unsettled at a time.
- **Settling**, on the client's command connection: acks batched into one XACK per event-loop
  iteration (:class:`~herald._durable.group.Acks`); nak, term, in_progress as scripts that only
  touch entries this consumer still owns (:class:`~herald._durable.group.Member`).
- **Redelivery** and clean-up in a maintenance task
  (:class:`~herald._durable.redelivery.Redelivery`).
- **Handling**: a handler on a task of its own, its failures settled by one policy
  (:mod:`~herald._durable.handling`), on lanes with ``concurrency``/``ordered_by_key``
  (:mod:`~herald._durable.ordered`).

A message's ``ack()`` and friends work on the event loop (await them, or not) and from any other
thread (they return when done there), so :class:`SyncConsumer` is a thin wrapper of this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Protocol

from herald._core.backoff import Backoff
from herald._core.durable_message import ConsumerStats, DurableHandler, DurableMessage
from herald._core.offsets import Position, group_start
from herald._core.streams import (
    DEAD_SUFFIX,
    HANDBACK_IDLE_MS,
    DurableTopic,
    Entry,
    ReadEntry,
    decode_entry,
    fast_entry,
    parse_read,
    read_messages,
)
from herald._core.typed import typed
from herald._core.wire import Foreign, check_foreign, decode_foreign
from herald._errors import (
    ClientClosed,
    ConfigurationError,
    ConnectionLost,
    HeraldError,
    ServerError,
)
from herald._io.cluster import new_link
from herald._io.interface import Connection
from herald._io.waiting import Buffered, within

from .group import Acks, Member
from .handling import CLOSE_TIMEOUT, Handling
from .ordered import run_tasks
from .position import PositionCheck
from .redelivery import Redelivery
from .replay import entry_key
from .setup import ConsumerSetup, OnTrimmed, default_consumer_name

log = logging.getLogger("herald")

READ_MARGIN = 3.0  # a blocked read not answered within its block time + this: connection dead
_UNLIMITED = 2**31  # max_deliver=None


class Host(Protocol):
    """The client side of a consumer (AsyncClient)."""

    async def _consumer_setup(self, topic: str) -> ConsumerSetup: ...
    def _durable_spec(self, topic: str) -> DurableTopic | None: ...
    def _consumer_closed(self, consumer: Consumer) -> None: ...


class Consumer(Handling, Buffered):
    """A consumer in a consumer group of a durable topic: an async iterator and context manager.

    Create it with :meth:`AsyncClient.consume`. Messages are delivered at least once: one not
    settled within ``ack_wait`` is delivered again (to any consumer of the group), up to
    ``max_deliver`` times; then, or on ``term()``, or if its payload cannot be decoded, it moves
    to the dead-letter topic ``<topic>.dead``.

    Args:
        group: the consumer group; every group receives every message, once per group.
        consumer: this consumer's name in the group; a restarted consumer with the same name
            first resumes what it held. Default: ``<hostname>-<pid>-<n>``.
        ack_wait: seconds a delivered message may stay unsettled before it is reclaimed.
        max_deliver: deliveries before a message is dead-lettered (``None``: no limit).
        backoff: nak delays by delivery count (``[1, 5, 30]``: 1 s after the first, 5 s after
            the second, then 30 s); used by ``nak()`` without a delay and by handlers that fail.
        max_ack_pending: most messages delivered to this consumer and not yet settled.
        batch: most entries read at once.
        start: where a *new* group starts: ``"new"`` (messages published from now on),
            ``"all"`` (the whole stream), after an entry id, or at a point in time (a
            ``datetime``, or seconds since the epoch). An existing group keeps its position.
        handler: run for every message (function or coroutine function) on a task; with
            ``auto_ack``, a message is acked when it returns and nak'd (with ``backoff``) when
            it raises. A handler whose first parameter is annotated with a msgspec ``Struct``
            or a pydantic model gets the payload decoded into it; payloads that do not
            validate are dead-lettered (``stats.invalid``).
        auto_ack: for handlers, as above; iterating, a message is acked when the next one is
            asked for or the ``async with`` block ends without an error, unless already settled.
        delete_idle_after: other consumers of the group idle this long with nothing pending are
            deleted from it (never one with pending entries).
        concurrency: handler calls in progress at once (tasks; threads for ``Client``).
        ordered_by_key: with a handler: messages with the same ``key`` (see ``publish``) are
            handled one after another in stream order, different keys concurrently; a failing
            message is retried in place (after ``backoff``) so that none overtakes it.
        on_trimmed: when entries the group had not read were trimmed away
            (:class:`PositionTrimmed`): ``"raise"`` stops the consumer with that error,
            ``"continue"`` logs it, counts ``stats.trimmed`` and reads on from the first entry
            left. Default: ``"raise"``, ``"continue"`` on dead-letter topics (``herald dead
            replay`` removes entries from them).
        foreign: how to read foreign payloads (stored without Herald's envelope, e.g. on a
            bare topic): ``"bytes"`` (default), ``"json"`` or ``"text"``, as in ``subscribe``;
            one that does not decode is dead-lettered (``undecodable: ...``,
            ``stats.decode_errors``).

    Example::

        async with hub.consume("orders", "billing", ack_wait=10) as orders:
            async for msg in orders:
                await bill(msg.data)   # acked when the loop asks for the next one
    """

    def __init__(
        self,
        host: Host,
        topic: str,
        group: str,
        consumer: str | None = None,
        *,
        ack_wait: float = 30.0,
        max_deliver: int | None = 5,
        backoff: Sequence[float] | None = None,
        max_ack_pending: int = 1000,
        batch: int = 100,
        start: Position = "new",
        handler: DurableHandler | None = None,
        auto_ack: bool = True,
        delete_idle_after: float = 3600.0,
        concurrency: int = 1,
        ordered_by_key: bool = False,
        on_trimmed: OnTrimmed | None = None,
        foreign: Foreign = "bytes",
    ) -> None:
        super().__init__()
        self._event = threading.Event()  # made now: threads (lanes, Client) wait on it at once
        check_foreign(foreign)
        if not isinstance(group, str) or not group:
            raise ConfigurationError("group must be a non-empty str")
        if consumer is not None and (not isinstance(consumer, str) or not consumer):
            raise ConfigurationError("consumer must be a non-empty str")
        if not ack_wait > 0:
            raise ConfigurationError("ack_wait must be > 0 seconds")
        if max_deliver is not None and max_deliver < 1:
            raise ConfigurationError("max_deliver must be >= 1 (or None for no limit)")
        if max_ack_pending < 1 or batch < 1:
            raise ConfigurationError("max_ack_pending and batch must be >= 1")
        if backoff is not None and any(not d >= 0 for d in backoff):
            raise ConfigurationError("backoff delays must be >= 0 seconds")
        if not delete_idle_after > 0:
            raise ConfigurationError("delete_idle_after must be > 0 seconds")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError("concurrency must be an int >= 1")
        if on_trimmed not in (None, "raise", "continue"):
            raise ConfigurationError("on_trimmed must be 'raise' or 'continue'")
        self.topic = topic
        self.group = group
        self.name = consumer or default_consumer_name()
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.backoff = list(backoff) if backoff else None
        self.max_ack_pending = max_ack_pending
        self.batch = batch
        self.start_id = group_start(start)
        self.handler: Callable[[DurableMessage], Any] | None = (
            None if handler is None else typed(handler, self._invalid)
        )
        self.auto_ack = auto_ack
        self.delete_idle_after = delete_idle_after
        self.concurrency = concurrency
        self.ordered_by_key = ordered_by_key
        self.foreign = foreign
        self.stats = ConsumerStats()
        self._host = host
        self._dead = topic.endswith(DEAD_SUFFIX)
        self.on_trimmed: OnTrimmed = on_trimmed or ("continue" if self._dead else "raise")
        self._position: PositionCheck | None = None
        self._max = _UNLIMITED if max_deliver is None else max_deliver
        # A blocked read makes this consumer look idle to the others' clean-up for that long.
        self._block = min(2.0, delete_idle_after / 4)
        self._low_water = batch // 2
        # Entries per read: batch, doubled (up to 4x) while the application waits for reads
        # with a backlog in the stream (see _next), back to batch once the stream is caught up.
        # A slow handler never waits for reads, so it never holds more than batch * 1.5 unread.
        self._read_size = batch
        self._read_cap = max(batch, min(4 * batch, max_ack_pending // 2))
        self._read_full = False  # the last read got all it asked for: there is a backlog
        self._buffer: deque[DurableMessage] = deque()
        self._lease_head: DurableMessage | None = None  # the buffer's head at the last lease
        self._outstanding: dict[bytes, DurableMessage] = {}  # by entry id; not yet settled
        self._last: DurableMessage | None = None  # the iterator's current message (auto_ack)
        self._room_waiter: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ops: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._member: Member | None = None
        self._acks: Acks | None = None
        self._redelivery: Redelivery | None = None
        self._read: Connection | None = None
        self._stopping: asyncio.Task[None] | None = None  # close() after StopSubscription

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Consumer:
        """Create the group if needed (with the stream), connect, and start reading."""
        if self._started:
            return self
        self._started = True
        loop = self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        try:
            setup = await self._host._consumer_setup(self.topic)
            member = self._member = Member(
                setup.scripts, setup.spec, self.group, self.name, self._max
            )
            await member.create(self.start_id)
            options = {**setup.link_options, "probe_interval": 0, "probe_timeout": None}
            self._read = new_link(setup.endpoint, name=f"{setup.name}-consume", **options)
            await self._read.connect()
            self._position = PositionCheck(self._read, self.topic, setup.spec.stream, self.group)
        except BaseException:
            self._closed = True
            self._host._consumer_closed(self)
            raise
        self._acks = Acks(member)
        self._redelivery = Redelivery(
            member,
            self.stats,
            ack_wait=self.ack_wait,
            batch=self.batch,
            delete_idle_after=self.delete_idle_after,
            room=lambda: self.max_ack_pending - len(self._outstanding),
            deliver=self._deliver,
            policy=lambda: self._host._durable_spec(self.topic) or member.spec,
            buffered=self._waiting,
        )
        self._tasks = [loop.create_task(self._fetch()), loop.create_task(self._redelivery.run())]
        if self.handler is not None:
            if self.concurrency > 1 or self.ordered_by_key:
                runner = run_tasks(self, self.handler)
            else:
                runner = self._run_handler(self.handler)
            self._tasks.append(loop.create_task(runner))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:  # a message still held counts as handled (auto_ack)
            self._auto_ack_last()
        await self.close()

    @property
    def error(self) -> HeraldError | None:
        """The error that stopped this consumer (e.g. :class:`PositionTrimmed`), if any."""
        return self._error

    def _waiting(self) -> list[bytes]:
        """The entries still in the buffer, for the maintenance pass to keep from going idle;
        none unless the application took a message since the last pass (a stuck handler must
        not hold the rest back from the other consumers: after ack_wait they reclaim it)."""
        held = list(self._buffer)  # one C call: a thread (Client) may be taking from it
        head = held[0] if held else None
        moved = head is not self._lease_head
        self._lease_head = head
        if not moved or head is None:
            return []
        return [m._entry for m in held]

    @property
    def pending(self) -> int:
        """Messages read and buffered here, not yet handed to the application."""
        return len(self._buffer)

    async def close(self) -> None:
        """Stop reading; send outstanding acks; hand back every unsettled message at once (other
        consumers reclaim it without waiting for ``ack_wait``)."""
        if self._closed:
            return
        self._closed = True
        if self._redelivery is not None:
            self._redelivery.close()
        self._wake()
        self._wake_room()
        await self._unblock_read()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._member is not None and self._acks is not None and self._redelivery is not None:
            held = list(self._outstanding.values())
            self._outstanding.clear()
            self._buffer.clear()
            try:
                # Bounded: with the server unreachable, what is not handed back returns to the
                # group after ack_wait anyway.
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    if self._ops:
                        await asyncio.gather(*self._ops, return_exceptions=True)
                    await self._acks.confirm()
                    # Entries never handed to the application do not count as a delivery.
                    await self._redelivery.hand_back(
                        [(m._entry, "" if m._seen else str(max(m.deliveries - 1, 0))) for m in held]
                    )
                    # Gone from the group unless it still holds entries (the others reap it).
                    await self._member.reap(0, only=self.name)
            except (HeraldError, TimeoutError) as exc:
                log.warning(
                    "consumer %s closing: %s; what it held returns after ack_wait",
                    self.name,
                    exc or f"no reply within {CLOSE_TIMEOUT}s",
                )
        if self._read is not None:
            await self._read.close()
        self._host._consumer_closed(self)

    async def _unblock_read(self) -> None:
        """End a blocked XREADGROUP on the server (CLIENT UNBLOCK from the command connection)
        before closing: else an entry published meanwhile can still be handed to this closing
        consumer's read, and stays pending for it until another consumer reclaims it."""
        read, member = self._read, self._member
        if read is None or member is None or not read.connected:
            return
        key = member.spec.stream_raw
        node = read.link_for_key(key) if hasattr(read, "link_for_key") else read
        command = member.scripts.link
        command = command.link_for_key(key) if hasattr(command, "link_for_key") else command
        client_id = node.server.get("id")
        if client_id is None or not command.connected:
            return
        with contextlib.suppress(HeraldError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await command.execute("CLIENT", "UNBLOCK", client_id)

    async def _fail(self, error: HeraldError) -> None:
        if self._error is None:
            self._error = error
        log.error("consumer %s of %s/%s stopped: %s", self.name, self.topic, self.group, error)
        await self.close()

    # -- reading -----------------------------------------------------------------------------

    async def _fetch(self) -> None:
        member, read = self._member, self._read
        assert member is not None
        assert read is not None
        backoff = Backoff(base=0.05, cap=2.0)
        resume: str | None = "-"  # own pending entries first, then new ones
        while not self._closed:
            count = await self._room()
            if not count:
                continue
            new: list[ReadEntry] | None = None
            try:
                if resume is not None:
                    resume, entries, buried = await member.resume(resume, count)
                    self.stats.dead_lettered += buried
                else:
                    new = await self._read_new(read, count)
                backoff.reset()
            except ServerError as exc:
                if not exc.reply.startswith("NOGROUP"):
                    log.warning("consumer %s: %s", self.name, exc)
                elif not await self._repair():
                    return
                await asyncio.sleep(backoff.next())
                continue
            except ConnectionLost as exc:
                # A read lost with its connection may have delivered entries: they are pending
                # under this consumer's name, so read those again first.
                log.info("consumer %s: %s", self.name, exc)
                resume = "-"
                await asyncio.sleep(backoff.next())
                continue
            except ClientClosed:
                return
            if new is not None:
                self._deliver_new(new)
            else:
                self._deliver(entries)

    async def _read_new(self, read: Connection, count: int) -> list[ReadEntry]:
        assert self._member is not None
        if not read.connected:
            await read.wait_connected(None)
        # Queued ahead of the read on its connection: it must see the group's position
        # before the read moves it (see _position).
        check = self._position.queue() if self._position is not None else None
        fut = read.execute(
            "XREADGROUP", "GROUP", self.group, self.name, "COUNT", count,
            "BLOCK", max(1, int(self._block * 1000)), "STREAMS", self._member.spec.stream, ">",
        )  # fmt: skip
        read.flush_now()  # the server reads while the handler works through the buffer
        try:
            async with asyncio.timeout(self._block + READ_MARGIN):
                reply = await fut
        except TimeoutError:
            # A silent server (or network): drop the connection, which reconnects.
            reason = f"no reply to XREADGROUP within {self._block + READ_MARGIN}s"
            proto = read.link_for_key(self._member.spec.stream)._proto
            if proto is not None:
                proto._abort(ConnectionLost(reason))
            raise ConnectionLost(reason) from None
        entries = parse_read(reply)
        self._read_full = len(entries) >= count
        if not self._read_full and self._read_size != self.batch:  # caught up
            self._read_size = self.batch
            self._low_water = self.batch // 2
        if self._position is not None and (trimmed := await self._position.verdict(check)):
            self.stats.trimmed += trimmed.lost
            if self.on_trimmed == "raise":
                if entries:  # never handed out: back to the group at once, no attempt counted
                    offsets = [e[0] for e in entries]
                    with contextlib.suppress(HeraldError):
                        await self._member.lease(offsets, HANDBACK_IDLE_MS, ["0"] * len(offsets))
                await self._fail(trimmed)
                return []
            log.warning("consumer %s: %s; reading on", self.name, trimmed)
        return entries

    async def _repair(self) -> bool:
        """NOGROUP: the group (or the whole stream) is gone. Recreate it, from the stream's
        start, unless the topic was deleted; restore the topic's policy if the server was
        flushed. False: the consumer stops."""
        assert self._member is not None
        self.stats.repairs += 1
        try:
            restored = await self._member.restore()
            if restored < 0:
                await self._fail(ClientClosed(f"topic {self.topic!r} was deleted"))
                return False
            await self._member.create("0")
        except HeraldError as exc:
            log.warning("consumer %s: NOGROUP repair failed, retrying: %s", self.name, exc)
            return True
        log.warning(
            "consumer %s: group %s of %s was gone (server flushed?); recreated it%s (repair #%d)",
            self.name,
            self.group,
            self.topic,
            " and the topic's policy" if restored else "",
            self.stats.repairs,
        )
        return True

    async def _room(self) -> int:
        """Wait until the buffer runs low and max_ack_pending allows more; how many to read."""
        assert self._loop is not None
        while not self._closed:
            free = self.max_ack_pending - len(self._outstanding)
            if free > 0 and len(self._buffer) <= self._low_water:
                return min(self._read_size, free)
            waiter = self._room_waiter = self._loop.create_future()
            free = self.max_ack_pending - len(self._outstanding)  # a thread may have made room
            if not (free > 0 and len(self._buffer) <= self._low_water):
                # The timeout is a safety net against a wake-up lost between threads.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await waiter
            self._room_waiter = None
        return 0

    def _wake_room(self) -> None:
        w = self._room_waiter
        if w is None or self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            # Only when a read is due (acks wake it too): a woken reader makes the handler
            # yield to it (_next, _run_handler).
            if not w.done() and (
                self._closed
                or (
                    len(self._buffer) <= self._low_water
                    and len(self._outstanding) < self.max_ack_pending
                )
            ):
                w.set_result(None)
        else:
            self._loop.call_soon_threadsafe(_set_once, w)

    def _deliver_new(self, entries: list[ReadEntry]) -> None:
        """:meth:`_deliver` for entries read for the first time (the hot loop of reading)."""
        if read_messages(
            self.topic, entries, self, self._outstanding, self._buffer.append, self._first
        ):
            self._wake()

    def _first(self, entry: bytes, fields: list[bytes]) -> DurableMessage | None:
        return self._general(entry, fields, 1)

    def _deliver(self, entries: list[Entry]) -> None:
        outstanding = self._outstanding
        append = self._buffer.append
        topic = self.topic
        added = False
        for entry_id, fields, deliveries in entries:
            if entry_id in outstanding:
                continue  # still being processed here; it outlived ack_wait
            msg = fast_entry(topic, entry_id, fields, deliveries, self) if fields else None
            if msg is None:
                msg = self._general(entry_id, fields, deliveries)
                if msg is None:
                    continue
            outstanding[entry_id] = msg
            append(msg)
            added = True
        if added:
            self._wake()

    def _general(self, entry: bytes, fields: list[bytes], deliveries: int) -> DurableMessage | None:
        """The message of an entry :func:`fast_entry` does not build (headers, a key, another
        codec, a foreign entry, an undecodable payload); ``None``: not delivered."""
        if not fields:  # trimmed away after it was delivered
            assert self._acks is not None
            self._acks.add(entry)
            return None
        msg = DurableMessage(
            decode_foreign(decode_entry(self.topic, fields), self.foreign),
            entry.decode(),
            deliveries,
            self,
        )
        if len(fields) > 2:
            msg.key = entry_key(fields)
        if msg.decode_error is not None and not self._dead:
            # Never delivered: a payload that cannot be decoded would fail every time. (On a
            # dead-letter topic it is delivered, to be inspected, rather than buried again.)
            self.stats.decode_errors += 1
            self._run(self._bury(entry, f"undecodable: {msg.decode_error}"))
            return None
        return msg

    # -- handing messages to the application -------------------------------------------------

    def _took(self, msg: DurableMessage) -> DurableMessage:
        msg._seen = True
        self.stats.delivered += 1
        if self._room_waiter is not None and len(self._buffer) <= self._low_water:
            self._wake_room()
        return msg

    def _auto_ack_last(self) -> None:
        last, self._last = self._last, None
        if last is not None and self.auto_ack and not last._settled:
            last.ack()

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> DurableMessage:
        last = self._last
        if last is not None:
            self._last = None
            if self.auto_ack and not last._settled:
                self._ack_here(last)
        buf = self._buffer
        if buf and ((w := self._room_waiter) is None or not w.done()):
            msg = self._took(buf.popleft())  # what _next() does first, without its coroutine
        else:
            msg = await self._next()
        self._last = msg
        return msg

    async def _next(self) -> DurableMessage:
        buf = self._buffer
        while True:
            if buf:
                if (w := self._room_waiter) is not None and w.done():
                    # The reader was woken (the buffer ran low): let it send its next read
                    # before going on. Before taking a message, so a cancel here loses none.
                    await asyncio.sleep(0)
                    continue
                return self._took(buf.popleft())
            if self._read_full and self._read_size < self._read_cap:
                self._read_size = min(2 * self._read_size, self._read_cap)  # reads lag behind
                self._low_water = self._read_size // 2
            await self._empty()

    async def next(self, timeout: float | None = None) -> DurableMessage:
        """The next message; :class:`Timeout` if none arrives in time, ``ClientClosed`` at end.

        Unlike iteration, this never acks the previous message.
        """
        return await within(self._next(), timeout, "consumer")

    def _next_sync(self, timeout: float | None, *, iterate: bool = False) -> DurableMessage:
        """Blocking next() for a thread other than the event loop's."""
        if iterate:
            self._auto_ack_last()
        msg = self._pop_blocking(self._buffer, timeout, "consumer")
        if iterate:
            self._last = msg
        return self._took(msg)


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
