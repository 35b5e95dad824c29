"""The message a consumer of a durable topic receives, and how it is settled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .message import Message


class Settler(Protocol):
    """What settles a message: its consumer."""

    def _ack(self, msg: DurableMessage, confirm: bool) -> Awaitable[None]: ...
    def _nak(self, msg: DurableMessage, delay: float | None) -> Awaitable[None]: ...
    def _term(self, msg: DurableMessage, reason: str) -> Awaitable[None]: ...
    def _in_progress(self, msg: DurableMessage) -> Awaitable[None]: ...


@dataclass
class ConsumerStats:
    """Counters of one consumer."""

    delivered: int = 0  # messages handed to the application
    acked: int = 0
    naked: int = 0
    termed: int = 0
    redelivered: int = 0  # entries reclaimed: ack_wait passed, a nak's delay, a hand-back
    dead_lettered: int = 0  # by this consumer: term, max_deliver, undecodable
    decode_errors: int = 0
    handler_errors: int = 0
    repairs: int = 0  # NOGROUP (a flushed server) repaired by recreating the group
    invalid: int = 0  # payloads a typed handler refused (dead-lettered, never handled)
    trimmed: int = 0  # entries removed from the stream before the group read them


class StoredMessage(Message):
    """A message read from a durable topic's stream: read-only (``history``, ``replay``,
    dead letters); :class:`DurableMessage`, delivered by a consumer, is one too.

    Attributes:
        offset: the stream entry id (``"1700000000000-0"``), the topic's offset; on a
            recoverable topic the message's offset (an int).
        key: the ordering key given to ``publish(..., key=...)``, else ``None``.
    """

    __slots__ = ("key",)

    def __init__(self, msg: Message, offset: str | int, key: str | None = None) -> None:
        # DurableMessage repeats this call rather than call this __init__: ~0.3 us a message less.
        super().__init__(
            msg.topic,
            msg.data,
            msg.raw,
            msg._codec,
            msg._pid,
            msg._seq,
            msg._ts,
            msg._headers,
            None,
            offset,
            msg.epoch,
            msg.decode_error,
        )
        self.key = key

    @property
    def stored_at(self) -> float:
        """When the server stored it: seconds since the epoch (from the entry id; on a
        recoverable topic, the publish time)."""
        if isinstance(self.offset, int):
            return self._ids()[2] / 1e6
        assert isinstance(self.offset, str)
        return int(self.offset.partition("-")[0]) / 1000

    def __repr__(self) -> str:
        return f"StoredMessage(topic={self.topic!r}, data={self.data!r}, offset={self.offset!r})"


class DurableMessage(StoredMessage):
    """A message of a durable topic, delivered by a :class:`Consumer`.

    Settle it once: :meth:`ack`, :meth:`nak` or :meth:`term`. Each returns an awaitable: in
    asyncio ``await msg.ack()``; from a thread (the sync ``Client``) just ``msg.ack()``, which
    returns when done.

    Attributes:
        offset: the stream entry id (``"1700000000000-0"``).
        key: the ordering key given to ``publish(..., key=...)``, else ``None``.
        deliveries: how many times this entry has been delivered, this time included.
        headers: the publisher's headers; dead letters add ``herald-reason``,
            ``herald-deliveries``, ``herald-topic``, ``herald-offset``, ``herald-group``,
            ``herald-consumer`` and ``herald-time`` (milliseconds since the epoch).

    Example::

        async for msg in hub.consume("orders", "billing"):
            try:
                await bill(msg.data)
            except TemporaryError:
                await msg.nak(delay=5)
            else:
                await msg.ack()
    """

    __slots__ = ("_consumer", "_entry", "_seen", "_settled", "deliveries")

    def __init__(self, msg: Message, offset: str, deliveries: int, consumer: Settler) -> None:
        # Message.__init__ directly, not StoredMessage's (the same call): ~0.3 us a message less.
        Message.__init__(
            self,
            msg.topic,
            msg.data,
            msg.raw,
            msg._codec,
            msg._pid,
            msg._seq,
            msg._ts,
            msg._headers,
            None,
            offset,
            None,
            msg.decode_error,
        )
        self.offset = offset  # again, through the property: a compiled Message sets its slot
        self.key: str | None = None  # set by the consumer when the entry has one
        self.deliveries = deliveries
        self._consumer = consumer
        self._settled = False
        self._seen = False  # handed to the application (a hand-back then counts a delivery)

    @property
    def offset(self) -> str:
        """The stream entry id (``"1700000000000-0"``)."""
        # Kept as the server sent it (the consumer's bookkeeping and XACK use the bytes), read
        # as text when asked: a decode per message less.
        return self._entry.decode()

    @offset.setter
    def offset(self, offset: str) -> None:
        self._entry = offset.encode()

    @property
    def settled(self) -> bool:
        """True once acked, nak'd or terminated by this consumer."""
        return self._settled

    def ack(self, *, confirm: bool = False) -> Awaitable[None]:
        """Done with it: it is never delivered again.

        Acks are batched (one XACK per event-loop iteration) and not waited for: a lost ack
        means a redelivery, which at-least-once allows. ``confirm=True`` waits for the server.
        """
        return self._consumer._ack(self, confirm)

    def nak(self, delay: float | None = None) -> Awaitable[None]:
        """Failed: deliver it again after ``delay`` seconds (default: the consumer's backoff
        schedule for this delivery count, else at once), to this or another consumer.

        On the last allowed delivery (``deliveries == max_deliver``) it goes to the dead letters.
        """
        return self._consumer._nak(self, delay)

    def term(self, reason: str = "terminated") -> Awaitable[None]:
        """Never deliver it again: move it to the dead-letter topic ``<topic>.dead`` now."""
        return self._consumer._term(self, reason)

    def in_progress(self) -> Awaitable[None]:
        """Still working on it: restart its ``ack_wait`` so that nobody reclaims it yet."""
        return self._consumer._in_progress(self)

    def __repr__(self) -> str:
        return (
            f"DurableMessage(topic={self.topic!r}, data={self.data!r}, offset={self.offset!r}, "
            f"deliveries={self.deliveries})"
        )


_new = Message.__new__  # object.__new__, unless Message is compiled (then its own)


def durable_message(
    topic: str,
    data: Any,
    raw: bytes,
    codec: int,
    entry: bytes,
    deliveries: int,
    consumer: Settler,
) -> DurableMessage:
    """A :class:`DurableMessage` built in one step from a decoded v1 frame (no headers, no key,
    no decode error), its ids left in the frame: what a consumer builds for nearly every entry.
    Same result as ``DurableMessage(Message(...), offset, deliveries, consumer)`` at a third of
    the cost; it must set every slot of the class (``tests/test_durable_fast.py`` checks).
    """
    # Written out again in streams.read_messages, the consumer's read loop: a call per entry less.
    msg: DurableMessage = _new(DurableMessage)
    msg.topic = topic
    msg.data = data
    msg.raw = raw
    msg._codec = codec
    msg._pid = None  # read from the frame when asked (Message._ids)
    msg._seq = 0
    msg._ts = 0
    msg._headers = None  # a dict of its own when asked for (Message.headers)
    msg.pattern = None
    msg.epoch = None
    msg.decode_error = None
    msg.key = None
    msg.deliveries = deliveries
    msg._entry = entry  # the offset (the slot of Message is not used)
    msg._consumer = consumer
    msg._settled = False
    msg._seen = False
    return msg


# A function of the message; or, typed (see _typed), of the decoded payload [and the message].
DurableHandler = (
    Callable[[DurableMessage], Any] | Callable[[Any], Any] | Callable[[Any, DurableMessage], Any]
)
