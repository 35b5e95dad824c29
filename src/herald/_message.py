"""The message a subscriber receives."""

from __future__ import annotations

from typing import Any

from ._errors import DecodeError

CONTENT_TYPES = (
    "application/octet-stream",
    "application/json",
    "application/msgpack",
    "text/plain",
)


class Message:
    """One message as delivered to a subscriber.

    Attributes:
        topic: the topic (Redis channel) it was published to.
        data: the decoded payload: ``bytes`` for raw and foreign payloads, ``str`` for text,
            the decoded value for JSON and msgpack.
        headers: string headers set by the publisher (trace context among them).
        pattern: the subscription pattern that matched, or ``None`` for a plain topic.
        decode_error: set when the payload could not be decoded; ``data`` then holds the raw bytes.

    Example::

        async for msg in sub:
            print(msg.topic, msg.data, msg.id)
    """

    __slots__ = (
        "_codec",
        "_pid",
        "_seq",
        "_ts",
        "data",
        "decode_error",
        "epoch",
        "headers",
        "offset",
        "pattern",
        "raw",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        data: Any,
        raw: bytes,
        codec: int,
        pid: bytes,
        seq: int,
        ts: int,
        headers: dict[str, str],
        pattern: str | None = None,
        offset: int | None = None,
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
        self.headers = headers
        self.pattern = pattern
        self.offset = offset
        self.epoch = epoch
        self.decode_error = decode_error

    @property
    def id(self) -> str | None:
        """Unique message id (publisher id and sequence), ``None`` for a foreign message."""
        if not self._pid:
            return None
        return f"{self._pid.hex()}-{self._seq}"

    @property
    def timestamp(self) -> float | None:
        """Publish time in seconds since the epoch, ``None`` for a foreign message."""
        return self._ts / 1e6 if self._pid else None

    @property
    def content_type(self) -> str:
        """MIME type of the payload as published."""
        return CONTENT_TYPES[self._codec]

    @property
    def foreign(self) -> bool:
        """True for a payload published without Herald's envelope (redis-cli, redis-py, ...).

        A damaged Herald frame is not foreign: it has ``decode_error`` set instead.
        """
        return not self._pid and self.decode_error is None

    def __repr__(self) -> str:
        return f"Message(topic={self.topic!r}, data={self.data!r}, id={self.id!r})"
