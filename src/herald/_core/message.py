"""The message a subscriber receives."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, Protocol, TypeVar

from herald._errors import DecodeError, HeraldError

from .topics import INBOX_PREFIX

_T = TypeVar("_T")

try:  # mypy's own package: installed wherever mypy is, not a dependency of Herald
    from mypy_extensions import mypyc_attr
except ImportError:  # the decorator only tells mypyc something: without it, it does nothing

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[_T], _T]:
        return lambda cls: cls


# The reserved header that makes a message a request: the channel its replies go to.
REPLY_TO = "herald-reply-to"
# The reserved header that carries a message's type ("OrderCreated"): see Message.type.
TYPE_HEADER = "herald-type"

# A v1 frame's publisher id, sequence and publish time (microseconds), at bytes 6-30 of the
# frame (see _wire, which checks that its header agrees): read from Message.raw on first use.
FRAME_IDS = struct.Struct(">8sQQ")
FRAME_IDS_AT = 6

CONTENT_TYPES = (
    "application/octet-stream",
    "application/json",
    "application/msgpack",
    "text/plain",
)


class ForeignDecodeError(DecodeError):
    """A foreign payload that is not what its subscription asked for (``foreign="json"``,
    ``"text"``): the message stays foreign."""


class _Done:
    """An awaitable that is already done: what settling a durable message or sending a reply
    returns when there is nothing to wait for (and what a thread gets, having waited already)."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        yield from ()


DONE = _Done()


class Replier(Protocol):
    """Publishes replies for the client whose subscriber received a request (what messages,
    subscriptions and responders use of ``_pubsub.request.Requests``)."""

    def reply(
        self, request: Message, data: Any, headers: Mapping[str, str] | None
    ) -> Awaitable[None]: ...

    def reply_error(
        self, request: Message, exc: BaseException, text: bool = False
    ) -> str | None: ...


# Compiled with mypyc (the optional accelerator, see setup.py), Message is a native class:
# StoredMessage and DurableMessage (durable_message.py) and users' classes subclass it.
@mypyc_attr(allow_interpreted_subclasses=True)
class Message:
    """One message as delivered to a subscriber.

    Attributes:
        topic: the topic (Redis channel) it was published to.
        data: the decoded payload: ``bytes`` for raw and foreign payloads, ``str`` for text,
            the decoded value for JSON and msgpack.
        headers: string headers set by the publisher (trace context among them).
        pattern: the subscription pattern that matched, or ``None`` for a plain topic.
        decode_error: set when the payload could not be decoded; ``data`` then holds the raw bytes.
        offset: the position in the topic's history: an int on recoverable topics, the stream
            entry id (``str``) on durable ones, ``None`` for live messages.

    Example::

        async for msg in sub:
            print(msg.topic, msg.data, msg.id)
    """

    __slots__ = (
        "_codec",
        "_headers",
        "_pid",
        "_replier",
        "_seq",
        "_ts",
        "data",
        "decode_error",
        "epoch",
        "offset",
        "pattern",
        "raw",
        "topic",
    )

    # Set by the subscriber on requests only (messages with a herald-reply-to header), never in
    # __init__: building a message costs the same as without request/reply. Read it with
    # replier_of().
    _replier: Replier

    def __init__(
        self,
        topic: str,
        data: Any,
        raw: bytes,
        codec: int,
        pid: bytes | None,
        seq: int,
        ts: int,
        headers: dict[str, str] | None,
        pattern: str | None = None,
        offset: int | str | None = None,
        epoch: int | None = None,
        decode_error: DecodeError | None = None,
    ) -> None:
        self.topic = topic
        self.data = data
        self.raw = raw
        self._codec = codec
        self._pid = pid
        self._seq = seq
        self._ts = ts
        self._headers = headers  # None: none yet (the dict is made when asked for)
        self.pattern = pattern
        self.offset = offset
        self.epoch = epoch
        self.decode_error = decode_error

    @property
    def headers(self) -> dict[str, str]:
        """String headers set by the publisher (trace context among them); this message's own
        dict: changing it changes nothing else."""
        headers = self._headers
        if headers is None:  # most messages have none: the dict is made on first use
            headers = self._headers = {}
        return headers

    @headers.setter
    def headers(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def _ids(self) -> tuple[bytes, int, int]:
        """(publisher id, sequence, publish time in µs); ``b""`` as publisher id: no frame.

        A ``pid`` of ``None`` given to the constructor means "read them from ``raw`` when asked":
        the decoders' fast paths leave them there (unpacking costs as much as the rest of
        building a message), as almost no receiver looks at them.
        """
        pid = self._pid
        if pid is None:
            pid, self._seq, self._ts = FRAME_IDS.unpack_from(self.raw, FRAME_IDS_AT)
            self._pid = pid
        return pid, self._seq, self._ts

    @property
    def id(self) -> str | None:
        """Unique message id (publisher id and sequence), ``None`` for a foreign message."""
        pid, seq, _ = self._ids()
        return f"{pid.hex()}-{seq}" if pid else None

    @property
    def timestamp(self) -> float | None:
        """Publish time in seconds since the epoch, ``None`` for a foreign message."""
        pid, _, ts = self._ids()
        return ts / 1e6 if pid else None

    @property
    def type(self) -> str | None:
        """The message type the publisher gave (``publish(..., type="OrderCreated")``) or
        Herald took from the payload's class (a msgspec ``Struct``'s tag or name, a pydantic
        model's name); ``None`` for untyped, foreign and bare messages. A handler annotated
        with a union of types receives the payload decoded into the member of this name."""
        headers = self._headers
        return headers.get(TYPE_HEADER) if headers else None

    @property
    def content_type(self) -> str:
        """MIME type of the payload as published."""
        return CONTENT_TYPES[self._codec]

    @property
    def foreign(self) -> bool:
        """True for a payload published without Herald's envelope (redis-cli, redis-py, ...).

        A damaged Herald frame is not foreign: it has ``decode_error`` set instead. A foreign
        payload that failed the subscription's ``foreign`` decoding has both.
        """
        error = self.decode_error
        return not self._ids()[0] and (error is None or error.__class__ is ForeignDecodeError)

    def reply(self, data: Any, headers: Mapping[str, str] | None = None) -> Awaitable[None]:
        """Answer this request: publish ``data`` to the requester's inbox.

        The reply is queued at once, from the event loop's thread or from any other thread (a
        :class:`Client`'s handler thread blocks here while the send buffer is full). In asyncio,
        await the result: it waits for room in the send buffer.

        Raises:
            HeraldError: the message is not a request (it has no ``herald-reply-to`` header, or
                one that is not a reply inbox ``_herald.inbox.*``) or was not received by a
                Herald subscription.
            ReservedName: a header name starts with ``herald-``.

        Example::

            async for msg in sub:
                await msg.reply({"sum": sum(msg.data)})
        """
        replier = replier_of(self)
        if replier is None:
            raise HeraldError(f"{self!r} is not a request received by a Herald subscription")
        return replier.reply(self, data, headers)

    def __repr__(self) -> str:
        return f"Message(topic={self.topic!r}, data={self.data!r}, id={self.id!r})"


def is_request(headers: Mapping[str, str]) -> bool:
    """Whether headers make a request: a reply address, and one in the inbox namespace (a
    request must not make its responder publish to a topic of the sender's choosing)."""
    to = headers.get(REPLY_TO)
    return to is not None and to.startswith(INBOX_PREFIX)


def replier_of(msg: Message) -> Replier | None:
    """Who can answer ``msg``: set for requests only."""
    return getattr(msg, "_replier", None)
