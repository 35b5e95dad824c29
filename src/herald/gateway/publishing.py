"""Publishing from HTTP and WebSocket clients, with W3C trace context carried along."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .state import Gateway

#: W3C trace context headers: copied from an HTTP request into the message's headers, and
#: delivered with the message (WebSocket and SSE frames carry the headers).
TRACE_HEADERS = ("traceparent", "tracestate")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
HEADER_PREFIX = "x-herald-header-"


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
) -> dict[str, Any]:
    """Publish through the gateway's client; the ack's fields (empty without ``confirm``)."""
    ack = await gw.hub.publish(
        topic,
        data,
        headers=headers or None,
        confirm=True if confirm else None,
        msg_id=msg_id,
        key=key,
    )
    gw.stats.published += 1
    if ack is None:
        return {}
    out: dict[str, Any] = {"receivers": ack.receivers}
    if ack.offset is not None:
        out["offset"] = ack.offset
    if ack.duplicate:
        out["duplicate"] = True
    return out
