"""Publishing from HTTP and WebSocket clients, with W3C trace context carried along.

A client publishes messages, never Herald's own metadata: ``herald-`` headers, the reply inbox
namespace and dead-letter topics are refused (the client library raises ``ReservedName`` for
those), and so is a payload on a *bare* topic that starts with the envelope's magic bytes, which
subscribers would read as a Herald envelope with a sender, headers and offset of the client's
choosing (see ``docs/gateway.md``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from herald import ReservedName, TopicPolicy

if TYPE_CHECKING:
    from .state import Gateway

#: W3C trace context headers: copied from an HTTP request into the message's headers, and
#: delivered with the message (WebSocket and SSE frames carry the headers).
TRACE_HEADERS = ("traceparent", "tracestate")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
HEADER_PREFIX = "x-herald-header-"
RESERVED_HEADER = "herald-"
#: The first bytes of every Herald frame (docs/wire-format.md).
ENVELOPE_MAGIC = b"\xffHR"

# Control characters (Unicode category Cc): refused in message types, as the client does.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class Refused(Exception):
    """A publish the gateway does not make for a client.

    Attributes:
        status: the HTTP status (400: the message, 403: the topic).
        code: the error code of the JSON error or WebSocket error frame.
        message: why, for the client.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def trace_context(headers: Mapping[str, str]) -> dict[str, str]:
    """The valid trace context headers of a request (a malformed ``traceparent`` is dropped,
    and ``tracestate`` with it, as the W3C recommendation says)."""
    parent = headers.get("traceparent", "").strip().lower()
    if not _TRACEPARENT.match(parent) or parent.startswith("ff"):
        return {}
    out = {"traceparent": parent}
    state = headers.get("tracestate", "").strip()
    if state and len(state) <= 512:
        out["tracestate"] = state
    return out


def message_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Message headers from HTTP request headers: ``X-Herald-Header-<name>`` and trace context."""
    out = {
        k[len(HEADER_PREFIX) :]: v
        for k, v in headers.items()
        if k.lower().startswith(HEADER_PREFIX) and len(k) > len(HEADER_PREFIX)
    }
    out.update(trace_context(headers))
    return out


async def publish_message(
    gw: Gateway,
    topic: str,
    data: Any,
    headers: Mapping[str, str] | None,
    *,
    confirm: bool,
    msg_id: str | None = None,
    key: str | None = None,
    message_type: str | None = None,
) -> dict[str, Any]:
    """Publish through the gateway's client; the ack's fields (empty without ``confirm``).

    Raises:
        Refused: a reserved header or topic, an envelope on a bare topic, an invalid
            message type.
    """
    if message_type is not None and (
        not isinstance(message_type, str)
        or not message_type
        or len(message_type) > 200
        or _CONTROL.search(message_type)
    ):
        raise Refused(
            400,
            "bad_request",
            "a message type is 1 to 200 characters, no control characters (a string)",
        )
    for name in headers or ():
        if name[:7].lower() == RESERVED_HEADER:
            raise Refused(400, "reserved_header", f"header {name!r}: herald- headers are Herald's")
    envelope = isinstance(data, bytes) and data.startswith(ENVELOPE_MAGIC)
    policy: TopicPolicy | None = None
    if envelope or topic.endswith(".dead"):
        # Fresh policies, for the client too: a topic declared durable a moment ago by another
        # process has its dead-letter topic, which the client then refuses (ReservedName).
        policy = (await gw.policies()).get(topic)
    if envelope and policy is not None and policy.bare:
        raise Refused(
            400,
            "reserved_payload",
            f"topic {topic!r} is bare: its payloads may not start with Herald's envelope "
            "bytes FF 48 52",
        )
    try:
        ack = await gw.hub.publish(
            topic,
            data,
            headers=headers or None,
            confirm=True if confirm else None,
            msg_id=msg_id,
            key=key,
            type=message_type,
        )
    except ReservedName as exc:
        raise Refused(403, "reserved_topic", str(exc)) from None
    gw.stats.published += 1
    if ack is None:
        return {}
    out: dict[str, Any] = {"receivers": ack.receivers}
    if ack.offset is not None:
        out["offset"] = ack.offset
    if ack.duplicate:
        out["duplicate"] = True
    return out
