"""The AsyncClient's methods for durable topics and topic policies (``docs/durable.md``).

:class:`DurableTopics` is mixed into :class:`~herald.AsyncClient`: the public surface of durable
topics (declare, consume, history, replay, dead letters) and the publish steps that store a
message in a stream, kept apart from the live core of the client. What it uses of the client is
declared below; the client defines it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Unpack

from herald._core.durable_message import StoredMessage
from herald._core.history import HistoryTopic, Page
from herald._core.offsets import Position, normalize_id
from herald._core.streams import DurableTopic, validate_msg_id
from herald._core.topics import validate_topic
from herald._core.url import Endpoint
from herald._core.wire import Encoder, decode
from herald._durable import admin as _admin
from herald._durable import replay as _replay
from herald._durable.acked import Settled, wait_settled
from herald._durable.admin import DeadLetter, TopicInfo
from herald._durable.confirm import wait_fsync
from herald._durable.consumer import Consumer
from herald._durable.keyed import publish_keyed, validate_key
from herald._durable.publish import Scripts
from herald._durable.publish import delete as durable_delete
from herald._durable.publish import publish as durable_publish
from herald._durable.publish import trim as durable_trim
from herald._durable.setup import ConsumeOptions, ConsumerSetup
from herald._io.interface import Connection
from herald._io.sharded import shard_for_topic

from ._errors import ClientClosed, ConfigurationError
from ._models import PubAck, TopicPolicy
from ._policies import Policies, new_policy
from ._policies import store as store_policy
from ._tracing import Tracing, trace_consumer

if TYPE_CHECKING:
    import asyncio

# How a topic is published: PUBLISH prefix, bare, durable spec, history spec (cached per topic).
Route = tuple[bytes, bool, DurableTopic | None, HistoryTopic | None]


class DurableTopics:
    """Durable topics and topic policies: the part of :class:`~herald.AsyncClient` that works
    on streams (mixed into it)."""

    # What these methods use of the client (AsyncClient defines them all).
    _link: Connection | None
    _closed: bool
    _tracing: Tracing | None
    _consumers: set[Consumer]
    _encoder: Encoder
    _name: str
    _link_options: dict[str, Any]
    _policies: Policies
    _fsync_waits: dict[tuple[int, int], asyncio.Future[Any]]
    endpoint: Endpoint | None
    publish_timeout: float | None
    published: int

    # Deliberately repeated signatures: type stubs of the AsyncClient methods this mixin
    # calls (the client defines them; nothing here exists at run time).
    if TYPE_CHECKING:

        async def connect(self) -> None: ...

        async def execute(self, *args: str | bytes | int | float, decode: bool = False) -> Any: ...

        async def _load_policies(self) -> None: ...

        def _prefix(self, topic: str) -> Route: ...

        def _warn_volatile(self, topic: str) -> None: ...

        def _scripts(self) -> Scripts: ...

        async def _read_history(self, topic: str, after: int, limit: int) -> Page: ...

    # -- topic policies ----------------------------------------------------------------------

    async def declare(
        self,
        topic: str,
        *,
        bare: bool = False,
        sharded: bool = True,
        durable: bool = False,
        max_len: int | None = None,
        max_age: float | None = None,
        dedup_window: float = 120.0,
        trim_unacked: bool = False,
        history: int = 0,
        history_ttl: float | None = None,
        update: bool = False,
        fsync: bool = False,
    ) -> TopicPolicy:
        """Store a topic's policy in Redis; every client applies it within ``policy_refresh``.

        See :class:`TopicPolicy` for the fields. A durable topic's dead-letter topic
        ``<topic>.dead`` is declared durable too, unless it already is declared.

        Raises:
            ConfigurationError: the topic is declared already with other settings (the message
                names them); pass ``update=True`` to change them.
            ReservedName: the topic is a reply inbox (``_herald.inbox.*``).

        Example::

            await hub.declare("legacy.events", bare=True)  # plain payloads for redis-py readers
            await hub.declare("legacy.events", bare=True, sharded=False, update=True)  # cluster
            await hub.declare("orders", durable=True, max_age=7 * 86400)
            await hub.declare("prices", history=1000, history_ttl=3600)  # recoverable
        """
        policy = new_policy(
            topic,
            bare=bare,
            sharded=sharded,
            durable=durable,
            max_len=max_len,
            max_age=max_age,
            dedup_window=dedup_window,
            trim_unacked=trim_unacked,
            history=history,
            history_ttl=history_ttl,
            fsync=fsync,
        )
        await self.connect()
        await store_policy(self._scripts(), topic, policy, update)
        await self._load_policies()
        if durable:
            self._warn_volatile(topic)
        return policy

    async def delete_topic(self, topic: str) -> bool:
        """Forget a topic's policy (it is live again) and delete its stream and idempotency
        keys; its consumers stop. ``<topic>.dead`` is a topic of its own and stays.

        Returns whether the topic was declared.
        """
        validate_topic(topic)
        await self.connect()
        assert self._link is not None
        existed = await durable_delete(self._link, topic)
        await self._load_policies()
        return existed

    async def trim(self, topic: str) -> int:
        """Apply a durable topic's retention (``max_len``, ``max_age``) now; return the number
        of entries removed. Publishers and consumers also do this periodically."""
        validate_topic(topic)
        await self.connect()
        durable = self._prefix(topic)[2]
        return 0 if durable is None else await durable_trim(self._scripts(), durable)

    # -- consuming durable topics (docs/durable.md) ------------------------------------------

    def consume(
        self,
        topic: str,
        group: str,
        consumer: str | None = None,
        **options: Unpack[ConsumeOptions],
    ) -> Consumer:
        """Consume a durable topic as one consumer of a consumer group; see :class:`Consumer`
        for the options.

        Use as ``async with hub.consume(...) as c: async for msg in c``, or with ``handler=``
        (``c = await hub.consume(..., handler=fn)``) to run a function on every message.

        Example::

            async with hub.consume("orders", "billing") as orders:
                async for msg in orders:
                    await bill(msg.data)
                    await msg.ack()
        """
        validate_topic(topic)
        if self._closed:
            raise ClientClosed("client closed")
        consumer_ = Consumer(self, topic, group, consumer, **options)
        if self._tracing is not None:
            trace_consumer(self._tracing, consumer_)
        self._consumers.add(consumer_)
        return consumer_

    async def _consumer_setup(self, topic: str) -> ConsumerSetup:
        await self.connect()
        await self._load_policies()  # fresh: it may have been declared a moment ago
        durable = self._prefix(topic)[2]
        if durable is None:
            raise ConfigurationError(
                f"topic {topic!r} is not durable: declare it first, e.g. "
                f"declare({topic!r}, durable=True)"
            )
        assert self._link is not None
        assert self.endpoint is not None
        tag = self._encoder.publisher_id.hex()[:8]
        # A sharded client's consumer reads from its topic's shard alone.
        endpoint, options = shard_for_topic(self.endpoint, self._link_options, topic)
        return ConsumerSetup(self._scripts(), durable, endpoint, options, f"{self._name}-{tag}")

    def _durable_spec(self, topic: str) -> DurableTopic | None:
        return self._prefix(topic)[2]

    def _consumer_closed(self, consumer: Consumer) -> None:
        self._consumers.discard(consumer)

    async def topics(self) -> dict[str, TopicPolicy]:
        """Declared topics and their policies (a topic nobody declared is live)."""
        await self._load_policies()
        return dict(self._policies.by_topic)

    # -- reading and looking after durable topics (docs/durable.md) --------------------------

    async def history(
        self, topic: str, *, since: Position | None = None, limit: int = 100
    ) -> list[StoredMessage]:
        """Up to ``limit`` stored messages of a durable or recoverable topic, oldest first, read
        without a consumer group (nothing is acked, no group moves).

        Args:
            since: ``None`` (the oldest entry on), an entry id (the entries *after* it: pass the
                last ``offset`` you got to read on), or a point in time (a ``datetime``, naive
                meaning local time, or seconds since the epoch: entries stored at or after it).
                On a recoverable topic: ``None`` or an offset (an int: the messages after it).

        Example::

            page = await hub.history("orders", since=datetime(2024, 5, 1, tzinfo=UTC))
            more = await hub.history("orders", since=page[-1].offset)
        """
        validate_topic(topic)
        await self.connect()
        await self._load_policies()  # fresh: it may have been declared a moment ago
        if self._prefix(topic)[3] is not None:
            if since is not None and (isinstance(since, bool) or not isinstance(since, int)):
                raise ConfigurationError(f"topic {topic!r} is recoverable: since is an offset")
            after = since or 0
            limit = max(0, min(limit, 10_000))
            # Each stored frame holds one publish call's messages: at most ``limit`` frames hold
            # the first ``limit`` messages after the offset.
            page = await self._read_history(topic, after, limit)
            found = [
                StoredMessage(m, m.offset)
                for frame in page.envelopes
                for m in decode(topic, frame)
                if isinstance(m.offset, int) and m.offset > after
            ]
            return found[:limit]
        execute = await self._durable_reader(topic)
        return await _replay.history(execute, topic, since, limit)

    async def replay(
        self,
        topic: str,
        *,
        since: Position | None = None,
        until: Position | None = None,
        page: int = 1000,
    ) -> AsyncIterator[StoredMessage]:
        """Every stored message of a durable topic from ``since`` (as in :meth:`history`) up to
        ``until`` (an entry id, included, or a point in time), read ``page`` entries at a time.
        Without ``until`` it ends at the end of the stream.

        Example::

            async for msg in hub.replay("orders", since=time.time() - 3600):
                print(msg.offset, msg.data)
        """
        execute = await self._durable_reader(topic)
        async for msg in _replay.replay(execute, topic, since, until, page):
            yield msg

    async def topic_info(self, topic: str) -> TopicInfo:
        """What a topic holds now: policy, stream length, first and last entries, consumer
        groups with their pending entries, lag and consumers, and its dead letters.

        Example::

            info = await hub.topic_info("orders")
            for group in info.groups:
                print(group.name, group.pending, group.lag)
        """
        validate_topic(topic)
        await self.connect()
        await self._load_policies()
        return await _admin.topic_info(self.execute, topic, self._policies.get(topic))

    async def dead_letters(
        self, topic: str, *, since: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``topic`` (the entries of ``<topic>.dead``), oldest
        first; ``since``: after that dead letter's offset.

        Example::

            for dead in await hub.dead_letters("orders"):
                print(dead.offset, dead.reason, dead.deliveries, dead.message.data)
        """
        execute = await self._durable_reader(topic)
        return await _admin.dead_letters(execute, topic, since, limit)

    async def replay_dead(self, topic: str, offsets: Iterable[str] | None = None) -> dict[str, str]:
        """Put dead letters back on their topic, after a fix: each is stored again as a new
        entry (every group of the topic gets it again), published live, and removed from
        ``<topic>.dead``, in one atomic step per dead letter. Dead letters already gone are
        skipped, so replaying twice is harmless.

        Args:
            offsets: the dead letters' offsets (``DeadLetter.offset``); ``None``: all of them.

        Returns:
            {dead letter offset: its new entry id on ``topic``} for those put back.

        Example::

            dead = await hub.dead_letters("orders")
            await hub.replay_dead("orders", [d.offset for d in dead if "timeout" in d.reason])
        """
        await self._durable_reader(topic)
        wanted = None if offsets is None else [normalize_id(o) for o in offsets]
        return await _admin.replay_dead(self._scripts(), self.execute, topic, wanted)

    async def wait_acked(
        self, topic: str, offset: str, group: str, *, timeout: float | None = 10.0
    ) -> Settled:
        """Wait until consumer group ``group`` of durable ``topic`` has settled the entry
        ``offset`` (a ``PubAck.offset``): delivered it and no longer holding it pending.

        Returns ``"acked"``, or ``"dead"`` when the group dead-lettered it (``term()``, a
        failing handler's last delivery, ``max_deliver``). A message the group will never
        read (published before it was created with ``start="new"``) counts as settled.

        Raises:
            ConfigurationError: the topic is not durable, has no group ``group``, or
                ``offset`` is not an entry id.
            Timeout: not settled within ``timeout`` seconds (``None``: no limit).

        Example::

            ack = await hub.publish("orders", order, confirm=True)
            if await hub.wait_acked("orders", str(ack.offset), "billing", timeout=30) == "dead":
                ...
        """
        await self._durable_reader(topic)
        return await wait_settled(self._scripts(), topic, offset, group, timeout)

    async def _durable_reader(self, topic: str) -> Callable[..., Any]:
        """The command connection's execute, once ``topic`` is known to be durable."""
        validate_topic(topic)
        await self.connect()
        await self._load_policies()  # fresh: it may have been declared a moment ago
        if self._prefix(topic)[2] is None:
            raise ConfigurationError(
                f"topic {topic!r} is not durable: it has no stream"
                + (" (it is recoverable: see history())" if self._prefix(topic)[3] else "")
            )
        assert self._link is not None
        return self._link.execute

    async def _publish_keyed(
        self,
        frame: bytes,
        durable: DurableTopic,
        key: str,
        msg_id: str | None,
        confirm: bool | None,
    ) -> PubAck | None:
        """A durable publish with an ordering key (see ``_keyed``)."""
        link = self._link
        assert link is not None
        validate_key(key)
        if msg_id is not None:
            validate_msg_id(msg_id)
        node = link.for_topic(durable.topic)
        if confirm is not False and not node.connected:
            await node.wait_connected(self.publish_timeout)
        reply = await publish_keyed(
            self._scripts(), durable, frame, key, msg_id, confirm is not False, self.publish_timeout
        )
        self.published += 1
        if reply is None:
            return None
        offset, duplicate, receivers = reply
        return PubAck(receivers, offset, duplicate)

    async def _publish_fsynced(
        self, link: Connection, frame: bytes, durable: DurableTopic, confirm: bool | None
    ) -> PubAck | None:
        ack = await self._publish_durable(frame, durable, None, confirm)
        if ack is not None:
            await wait_fsync(link, durable, 0, ack, self.publish_timeout, self._fsync_waits)
        return ack

    async def _publish_durable(
        self, frame: bytes, durable: DurableTopic, msg_id: str | None, confirm: bool | None
    ) -> PubAck | None:
        link = self._link
        assert link is not None
        if msg_id is not None:
            validate_msg_id(msg_id)
        if confirm is False:
            await durable_publish(
                self._scripts(), durable, frame, msg_id, False, self.publish_timeout
            )
            self.published += 1
            return None
        node = link.for_topic(durable.topic)
        if not node.connected:
            await node.wait_connected(self.publish_timeout)
        reply = await durable_publish(
            self._scripts(), durable, frame, msg_id, True, self.publish_timeout
        )
        assert reply is not None
        self.published += 1
        offset, duplicate, receivers = reply
        return PubAck(receivers, offset, duplicate)
