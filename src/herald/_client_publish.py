"""How the AsyncClient publishes: ``publish`` (with its fast path for a known live topic) and
``publish_many``, a topic's route (from its policy), encoding, and the publish paths past the
fast path (confirmed, durable, recoverable, bare, traced, from threads).

:class:`Publishing` is mixed into :class:`~herald.AsyncClient`. What it uses of the client is
declared below; the client defines it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, Literal, overload

from herald._core.history import PUBLISH_HISTORY, HistoryTopic
from herald._core.message import TYPE_HEADER
from herald._core.resp import prefix
from herald._core.streams import DEAD_SUFFIX, DurableTopic
from herald._core.topics import check_headers, is_inbox, validate_topic
from herald._core.typed import UNTYPED, with_type
from herald._core.wire import Encoder
from herald._durable.confirm import wait_fsync, wait_replicas
from herald._durable.publish import publish_many as durable_publish_many
from herald._io.interface import BLOCKED, FLUSHED, QUEUED, Connection, Prefix
from herald._io.link import MAX_BATCH_MESSAGES

from ._client_durable import DurableTopics, Route
from ._errors import ClientClosed, ConfigurationError, HeraldError, MessageTooLarge, ReservedName
from ._models import PubAck
from ._policies import durable_topic

log = logging.getLogger("herald")

_PUBLISH = b"PUBLISH"
_PREFIX_CACHE_MAX = 10_000


class Publishing(DurableTopics):
    """Routes, encoding and the publish paths of :class:`~herald.AsyncClient` (mixed into it)."""

    # What these methods use of the client (AsyncClient defines them all).
    _encoder: Encoder
    _prefixes: dict[str, Route]
    _internal: dict[str, Route]
    _warned_bare: set[str]
    batch: bool
    envelope: bool
    max_message_size: int

    # Deliberately repeated: the two overloads and the implementation state one parameter list
    # three times, as @overload needs (confirm=True returns a PubAck); herald.Client repeats
    # them, kept identical by tests/test_signatures.py.
    @overload
    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        headers: Mapping[str, str] | None = None,
        confirm: Literal[True],
        msg_id: str | None = None,
        key: str | None = None,
        replicas: int = 0,
        envelope: bool | None = None,
        fsync: bool = False,
        type: str | None = None,
    ) -> PubAck: ...

    @overload
    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        headers: Mapping[str, str] | None = None,
        confirm: bool | None = None,
        msg_id: str | None = None,
        key: str | None = None,
        replicas: int = 0,
        envelope: bool | None = None,
        fsync: bool = False,
        type: str | None = None,
    ) -> PubAck | None: ...

    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        headers: Mapping[str, str] | None = None,
        confirm: bool | None = None,
        msg_id: str | None = None,
        key: str | None = None,
        replicas: int = 0,
        envelope: bool | None = None,
        fsync: bool = False,
        type: str | None = None,
    ) -> PubAck | None:
        """Publish one message.

        Returns ``None`` at once without a round trip; with ``confirm=True`` waits for the
        server and returns a :class:`PubAck` whose ``receivers`` is the server's delivery count:
        one per subscribed channel and per matching pattern of every connection (a connection
        with both counts, and receives, twice).
        While the server is unreachable, messages are kept (up to ``max_pending_bytes``) and
        sent after the reconnect; a confirmed publish waits up to ``publish_timeout`` for the
        connection to come back.

        On a durable topic the message is stored in the topic's stream and published live in
        one server-side step, and ``confirm`` defaults to True: the :class:`PubAck` then has the
        entry id (``offset``); ``confirm=False`` sends it without waiting. ``msg_id`` makes the
        publish idempotent there: the same ``msg_id`` within the topic's ``dedup_window`` is
        stored once (``PubAck.duplicate``). Live topics ignore ``msg_id``: a publisher cannot
        know whether a topic is durable, that is the topic's policy. ``key`` is a durable
        message's ordering key (``consume(..., ordered_by_key=True)``); live topics ignore it.
        ``replicas=N`` (durable topics, confirmed publishes): after the store, wait (``WAIT``,
        up to ``publish_timeout``) until ``N`` replicas have it, so that a failover cannot lose
        an acknowledged message (see ``docs/scaling.md``); other topics ignore it.
        ``envelope=False`` sends this message's payload alone, for plain Redis subscribers
        (see the client's ``envelope``); ``True`` wraps it even on a bare topic.
        ``fsync=True`` (durable topics, confirmed publishes): return only once the server has
        the message fsynced to its AOF (``WAITAOF``; with ``replicas=N``, on N replicas' AOF
        too), so that a crash of the server process or machine cannot lose an acknowledged
        message. With ``appendfsync everysec`` that waits for the next fsync (up to about a
        second; concurrent publishes share it); with ``appendfsync always`` it costs a round
        trip. Needs AOF on the server (``ConfigurationError`` otherwise); other topics ignore it.
        ``type`` is the message type (``msg.type``; ``docs/events.md``), sent in the reserved
        header ``herald-type``; without it a msgspec ``Struct`` or pydantic model payload is
        typed by its class (a Struct's tag, else the class name). A message without envelope
        has no type.

        Raises:
            InvalidTopic, MessageTooLarge, TypeError: before anything is sent (TypeError: a
                payload the codec cannot encode, NaN and infinities in JSON among them).
            ConfigurationError: ``envelope=False`` with headers or a ``type``, or on a
                recoverable topic; a ``type`` that is empty, too long or holds a control character.
            ReservedName: a header name starts with ``herald-``, or the topic is Herald's
                (a reply inbox ``_herald.inbox.*``, a durable topic's ``<topic>.dead``).
            NotReplicated: with ``replicas``, fewer replicas acknowledged in time; the message
                is stored on the primary.
            NotPersisted: with ``fsync``, not confirmed on disk within ``publish_timeout``;
                the message is stored (in memory).
            Timeout: the send buffer stayed full (or, with ``confirm=True``, the connection
                stayed down) for ``publish_timeout``; the message was not queued.
            ConnectionLost: with ``confirm=True``, the connection died before the reply.
        """
        if headers:
            check_headers(headers)
        if type is not None or data.__class__ not in UNTYPED:
            headers = with_type(headers, type, data, envelope)
        tracing = self._tracing
        if tracing is not None and tracing.active():
            # In a producer span, its trace context added to the headers.
            if self._link is None:
                await self.connect()
            carries = self._carries_headers(topic, envelope)
            with tracing.publishing(topic, headers, carries, data) as (span, sent):
                ack = await self._publish(
                    topic, data, sent, confirm, msg_id, key, replicas, envelope, fsync
                )
                if ack is not None and ack.offset is not None:
                    span.set_attribute("messaging.herald.offset", ack.offset)
                return ack
        link = self._link
        entry = self._prefixes.get(topic)
        if (
            link is not None
            and entry is not None
            and not confirm
            and not entry[1]
            and envelope is not False
            and entry[2] is None
            and entry[3] is None
        ):
            # The hot path: a known live topic, fire-and-forget; queued without a second
            # coroutine unless the buffer is full or was just written.
            frame = self._encoder.envelope(data, headers)
            if len(frame) > self.max_message_size:
                raise MessageTooLarge(len(frame), self.max_message_size)
            frames = [frame]
            status = link.try_publish(entry[0], frames, self.batch)
            if status == QUEUED:
                self.published += 1
            elif status == FLUSHED:
                self.published += 1
                await asyncio.sleep(0)  # as in _publish_live
            else:
                await self._publish_live(link, entry[0], frames, self.batch)
            return None
        return await self._publish(
            topic, data, headers, confirm, msg_id, key, replicas, envelope, fsync
        )

    async def _publish_live(
        self, link: Connection, pfx: Prefix, frames: list[bytes], batchable: bool
    ) -> None:
        status = link.try_publish(pfx, frames, batchable)
        while status == BLOCKED:
            await link.wait_writable(self.publish_timeout)
            status = link.try_publish(pfx, frames, batchable)
        self.published += len(frames)
        if status == FLUSHED:
            await asyncio.sleep(0)  # a publisher in a tight loop still lets other tasks run

    async def publish_many(
        self,
        topic: str,
        items: Iterable[Any],
        *,
        headers: Mapping[str, str] | None = None,
        envelope: bool | None = None,
        type: str | None = None,
    ) -> None:
        """Publish several messages to one topic, in order, without waiting for the server.

        Cheaper per message than ``publish`` in a loop: one call encodes them all and queues
        them at once (into batch frames on a live topic). On a durable topic each message is
        stored as with ``publish(confirm=False)``: its XADD and PUBLISH, queued in one burst.
        ``envelope`` and ``type`` are ``publish``'s (without ``type``, each item typed by its
        class).

        Example::

            await hub.publish_many("prices.tech", [{"px": 1.5 + i} for i in range(100)])
        """
        if self._link is None:
            await self.connect()
        if headers:
            check_headers(headers)
        items = list(items)
        if type is not None or any(d.__class__ not in UNTYPED for d in items):
            # the message type is a header, and each item may have its own: one at a time
            for data in items:
                await self.publish(
                    topic, data, headers=headers, confirm=False, envelope=envelope, type=type
                )
            return None
        tracing = self._tracing
        if tracing is not None and tracing.active():
            with tracing.publishing(
                topic, headers, self._carries_headers(topic, envelope), count=len(items)
            ) as (_, sent):
                return await self._publish_many(topic, items, sent, envelope)
        return await self._publish_many(topic, items, headers, envelope)

    def _prefix(self, topic: str) -> Route:
        """(PUBLISH prefix, bare, durable spec, history spec) of a topic, cached."""
        entry = self._prefixes.get(topic) or self._internal.get(topic)
        if entry is None:
            raw = validate_topic(topic)
            policy = self._policies.get(topic)
            durable = durable_topic(topic, policy) if policy and policy.durable else None
            history = (
                HistoryTopic(topic, policy.history, policy.history_ttl)
                if policy and policy.history
                else None
            )
            reserved = self._reserved(topic)
            # The client's envelope=False applies to live topics only: a durable or recoverable
            # topic's stored messages, and requests' replies, need the envelope.
            bare = (policy is not None and policy.bare) or (
                not self.envelope and durable is None and history is None and reserved is None
            )
            entry = (prefix(_PUBLISH, raw), bare, durable, history)
            if durable is not None:
                self._warn_volatile(topic)
            cache = self._internal if reserved else self._prefixes
            if len(cache) >= _PREFIX_CACHE_MAX:
                cache.clear()
            cache[topic] = entry
        return entry

    def _reserved(self, topic: str) -> str | None:
        """Why only Herald may publish to ``topic``, or ``None`` when anyone may."""
        if not isinstance(topic, str):
            return None  # InvalidTopic, from validate_topic
        if is_inbox(topic):
            return "the reply inboxes of requests are written by responders only"
        if topic.endswith(DEAD_SUFFIX):
            own = self._policies.get(topic)
            parent = self._policies.get(topic[: -len(DEAD_SUFFIX)])
            if (own is not None and own.durable) or (parent is not None and parent.durable):
                return "dead letters are written by Herald only (see replay_dead)"
        return None

    def _check_publish(self, topic: str, headers: Mapping[str, str] | None) -> None:
        """Refuse what only Herald may publish: reserved headers, reserved topics."""
        if headers:
            check_headers(headers)
        reason = self._reserved(topic)
        if reason is not None:
            raise ReservedName(topic, reason)

    def _frame(
        self, topic: str, data: Any, headers: Mapping[str, str] | None
    ) -> tuple[bytes, bytes, bool]:
        """(command prefix, frame, bare) of a request or reply: always in an envelope."""
        pfx, frame, bare, _, _ = self._encode(topic, data, headers, True)
        return pfx, frame, bare

    def _declared_bare(self, topic: str) -> bool:
        """Whether the topic's stored policy is bare (not only this client's default)."""
        policy = self._policies.get(topic)
        return policy is not None and policy.bare

    def _encode(
        self,
        topic: str,
        data: Any,
        headers: Mapping[str, str] | None,
        envelope: bool | None = None,
    ) -> tuple[bytes, bytes, bool, DurableTopic | None, HistoryTopic | None]:
        pfx, bare, durable, history = self._prefix(topic)
        if envelope is not None and envelope == bare:  # the caller's choice overrides
            if not envelope:
                if history is not None:
                    raise ConfigurationError(
                        f"topic {topic!r} is recoverable: its messages need the envelope"
                    )
                if headers:
                    raise ConfigurationError("a message without envelope carries no headers")
            bare = not envelope
        if history is not None:
            frame = self._encoder.envelope(data, headers, 0, 0)  # the script fills them in
        elif not bare:
            frame = self._encoder.envelope(data, headers)
        else:
            if headers and headers.keys() - {TYPE_HEADER} and topic not in self._warned_bare:
                self._warned_bare.add(topic)
                log.warning("topic %r is bare: its messages carry no headers", topic)
            frame = self._encoder.payload(data)[1]
        if len(frame) > self.max_message_size:
            raise MessageTooLarge(len(frame), self.max_message_size)
        return pfx, frame, bare, durable, history

    async def _publish(
        self,
        topic: str,
        data: Any,
        headers: Mapping[str, str] | None,
        confirm: bool | None,
        msg_id: str | None,
        key: str | None,
        replicas: int,
        envelope: bool | None,
        fsync: bool,
    ) -> PubAck | None:
        """``publish`` past its fast path (headers checked): any topic, any option."""
        link = self._link
        if link is None:
            await self.connect()
            link = self._link
            assert link is not None
        self._check_publish(topic, None)
        pfx, frame, bare, durable, history = self._encode(topic, data, headers, envelope)
        if history is not None:
            return await self._publish_history(history, [frame], confirm)
        if durable is not None:
            if (replicas or fsync) and confirm is False:
                raise ConfigurationError(
                    "replicas= and fsync= need a confirmed publish (confirm=True)"
                )
            if key is not None:
                ack = await self._publish_keyed(frame, durable, key, msg_id, confirm)
            else:
                ack = await self._publish_durable(frame, durable, msg_id, confirm)
            if (fsync or durable.fsync) and ack is not None:
                await wait_fsync(
                    link, durable, replicas, ack, self.publish_timeout, self._fsync_waits
                )
            elif replicas and ack is not None:
                await wait_replicas(link, durable, replicas, ack, self.publish_timeout)
            return ack
        if confirm:
            # Wait for the connection before queuing: a Timeout then means "not sent", never
            # "sent later by surprise".
            node = link.for_topic(topic)
            if not node.connected:
                await node.wait_connected(self.publish_timeout)
            receivers = int(await link.execute(_PUBLISH, topic, frame))
            self.published += 1
            return PubAck(receivers)
        await self._publish_live(link, pfx, [frame], self.batch and not bare)
        return None

    def _carries_headers(self, topic: str, envelope: bool | None) -> bool:
        """Whether a publish to ``topic`` sends an envelope, which carries headers."""
        if not isinstance(topic, str):
            return False  # InvalidTopic, from the publish
        try:
            bare = self._prefix(topic)[1]
        except HeraldError:
            return False  # the publish raises it
        return envelope if envelope is not None else not bare

    async def _publish_many(
        self,
        topic: str,
        items: Iterable[Any],
        headers: Mapping[str, str] | None,
        envelope: bool | None,
    ) -> None:
        link = self._link
        assert link is not None
        self._check_publish(topic, headers)
        pfx, bare, durable, history = self._prefix(topic)
        if envelope is not None and envelope == bare:  # not the topic's form: one at a time
            for data in items:
                await self.publish(topic, data, headers=headers, confirm=False, envelope=envelope)
            return
        if history is not None:
            frames = [self._encoder.envelope(data, headers, 0, 0) for data in items]
            for frame in frames:
                if len(frame) > self.max_message_size:
                    raise MessageTooLarge(len(frame), self.max_message_size)
            for i in range(0, len(frames), MAX_BATCH_MESSAGES):
                await self._publish_history(history, frames[i : i + MAX_BATCH_MESSAGES], False)
            return
        if durable is not None and not bare:
            frames = [self._encoder.envelope(data, headers) for data in items]
            for frame in frames:
                if len(frame) > self.max_message_size:
                    raise MessageTooLarge(len(frame), self.max_message_size)
            await durable_publish_many(self._scripts(), durable, frames, self.publish_timeout)
            self.published += len(frames)
            return
        if bare or durable is not None:
            for data in items:
                await self.publish(topic, data, headers=headers, confirm=False)
            return
        encode = self._encoder.envelope
        limit = self.max_message_size
        frames = [encode(data, headers) for data in items]
        for frame in frames:
            if len(frame) > limit:
                raise MessageTooLarge(len(frame), limit)
        # Chunks keep one call from overshooting the outage buffer by more than a batch frame.
        for i in range(0, len(frames), MAX_BATCH_MESSAGES):
            await self._publish_live(link, pfx, frames[i : i + MAX_BATCH_MESSAGES], self.batch)

    def _publish_threadsafe(
        self,
        topic: str,
        data: Any,
        headers: Mapping[str, str] | None,
        confirm: bool | None,
        envelope: bool | None = None,
    ) -> Coroutine[Any, Any, PubAck | None] | None:
        """Publish live from any thread; for a durable or recoverable topic return the
        coroutine that publishes it, to be run on the loop."""
        link = self._link
        if link is None:
            raise ClientClosed("client is not connected")
        pfx, frame, bare, durable, history = self._encode(topic, data, headers, envelope)
        if history is not None:
            return self._publish_history(history, [frame], confirm)
        if durable is not None:
            if durable.fsync and confirm is not False:
                return self._publish_fsynced(link, frame, durable, confirm)
            return self._publish_durable(frame, durable, None, confirm)
        link.publish_threadsafe(pfx, frame, self.batch and not bare, self.publish_timeout)
        self.published += 1
        return None

    async def _publish_history(
        self, history: HistoryTopic, frames: list[bytes], confirm: bool | None
    ) -> PubAck | None:
        """Publish to a recoverable topic: one script stores and publishes (``_history``).
        Fire-and-forget publishes of one event-loop iteration share one script call."""
        link = self._link
        assert link is not None
        scripts = self._scripts()
        if confirm:
            node = link.for_topic(history.topic)
            if not node.connected:
                await node.wait_connected(self.publish_timeout)
            _, last, epoch, receivers = await scripts.call(
                PUBLISH_HISTORY, history.keys, [*history.args, *frames]
            )
            self.published += len(frames)
            return PubAck(int(receivers), int(last), epoch=int(epoch))
        scripts.ensure(PUBLISH_HISTORY)
        await self._publish_live(link, history, frames, True)
        return None
