"""What the gateway sends: messages and events as JSON, encoded once per message.

Every frame is one JSON object with a ``type``; a WebSocket text frame holds one object, or a
JSON array of them when messages queue up for a client (see ``docs/gateway.md``). This module
does no I/O: it also builds the WebSocket frame itself (``ws_text_frame``), so that a fan-out
frames the same bytes once for every client instead of once per client.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import msgspec

from herald import Message

_encode = msgspec.json.Encoder().encode


def jsonable(data: Any, content_type: str = "application/json") -> tuple[str, Any]:
    """The payload's field in a frame, by what was published: ``("data", value)`` for a JSON
    value, ``("text", str)`` for text, ``("data_b64", base64)`` for bytes.

    Example::

        >>> jsonable("hi", "text/plain"), jsonable("hi"), jsonable(b"hi")
        (('text', 'hi'), ('data', 'hi'), ('data_b64', 'aGk='))
    """
    if isinstance(data, bytes | bytearray | memoryview):
        return "data_b64", base64.b64encode(bytes(data)).decode()
    if isinstance(data, str) and content_type == "text/plain":
        return "text", data
    return "data", data


def message_dict(msg: Message, subscription: str | None = None) -> dict[str, Any]:
    """The JSON fields of one message (also the items of ``GET /topics/{topic}/messages``)."""
    key, value = jsonable(msg.data, msg.content_type)
    out: dict[str, Any] = {"type": "message", "topic": msg.topic, key: value}
    if subscription is not None and subscription != msg.topic:
        out["subscription"] = subscription
    if msg._headers:
        out["headers"] = msg._headers
        if (message_type := msg.type) is not None:
            out["message_type"] = message_type
    if msg.offset is not None:
        out["offset"] = msg.offset
    epoch = getattr(msg, "epoch", None)
    if epoch is not None:
        out["epoch"] = epoch
    if msg.id is not None:
        out["id"] = msg.id
    if msg.timestamp is not None:
        out["ts"] = msg.timestamp
    return out


def encode_bytes(obj: Any) -> bytes:
    """One frame as UTF-8 JSON; values JSON cannot hold are sent as their ``str``."""
    try:
        return _encode(obj)
    except (TypeError, msgspec.EncodeError):
        return msgspec.json.encode(obj, enc_hook=str)


def encode(obj: Any) -> str:
    """One frame as text (see :func:`encode_bytes`)."""
    return encode_bytes(obj).decode()


def message_bytes(msg: Message, subscription: str | None = None) -> bytes:
    """One ``message`` frame as UTF-8 JSON."""
    return encode_bytes(message_dict(msg, subscription))


def message_frame(msg: Message, subscription: str | None = None) -> str:
    """One ``message`` frame as text."""
    return message_bytes(msg, subscription).decode()


def json_array(items: list[bytes]) -> bytes:
    """Encoded JSON values as one JSON array; a single value stays as it is.

    Example::

        >>> json_array([b'{"a":1}', b'{"b":2}'])
        b'[{"a":1},{"b":2}]'
    """
    return items[0] if len(items) == 1 else b"[" + b",".join(items) + b"]"


def ws_text_frame(payload: bytes) -> bytes:
    """One final, unmasked WebSocket text frame (RFC 6455 section 5.2) carrying ``payload``.

    Server frames are never masked and the gateway negotiates no extension, so the frame is
    the same for every client: a fan-out builds it once and writes the same bytes to each.

    Example::

        >>> ws_text_frame(b'{"type":"pong"}')
        b'\\x81\\x0f{"type":"pong"}'
    """
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 0x10000:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


def event_frame(kind: str, **fields: Any) -> str:
    return encode({"type": kind, **fields})
