"""What the gateway sends: messages and events as JSON, encoded once per message.

Every frame is one JSON object with a ``type``; a WebSocket text frame holds one object, or a
JSON array of them when messages queue up for a client (see ``docs/gateway.md``).
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from herald import Message

_encode = msgspec.json.Encoder().encode


def jsonable(data: Any) -> tuple[str, Any]:
    """``("data", value)`` for JSON-able payloads; ``("data_b64", text)`` for binary ones."""
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        try:
            return "data", raw.decode()
        except UnicodeDecodeError:
            return "data_b64", base64.b64encode(raw).decode()
    return "data", data


def message_dict(msg: Message, subscription: str | None = None) -> dict[str, Any]:
    """The JSON fields of one message (also the items of ``GET /topics/{topic}/messages``)."""
    key, value = jsonable(msg.data)
    out: dict[str, Any] = {"type": "message", "topic": msg.topic, key: value}
    if subscription is not None and subscription != msg.topic:
        out["subscription"] = subscription
    if msg.headers:
        out["headers"] = msg.headers
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


def encode(obj: Any) -> str:
    """One frame as text; values JSON cannot hold are sent as their ``str``."""
    try:
        return _encode(obj).decode()
    except (TypeError, msgspec.EncodeError):
        return msgspec.json.encode(obj, enc_hook=str).decode()


def message_frame(msg: Message, subscription: str | None = None) -> str:
    return encode(message_dict(msg, subscription))


def event_frame(kind: str, **fields: Any) -> str:
    return encode({"type": kind, **fields})
