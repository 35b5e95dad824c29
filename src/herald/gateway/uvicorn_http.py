"""uvicorn's HTTP/1.1 protocol (h11) with the limits a gateway on a network needs.

- **A connection cap**: a connection beyond ``max_connections`` open ones (HTTP and
  WebSocket together) is aborted as soon as it is accepted, before it costs a parser or a task.
- **Header and body timeouts**: a client that has not sent a request's headers within
  ``header_timeout`` (from its connection, or from the end of its previous response), or its
  body within ``body_timeout``, is aborted. uvicorn alone waits forever for a request sent a
  byte at a time (slowloris).
- **Abort for the app**: ``scope["extensions"]["herald.abort"]`` drops the connection at once,
  unsent data included. A ``close()`` waits until the client has read everything buffered for
  it, which a client that never reads never does: the gateway aborts the SSE streams it cuts.

Example::

    uvicorn.run(app, http=http_protocol(GatewayConfig()), ws=WS_PROTOCOL)
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import GatewayConfig

#: The key of the abort call in ``scope["extensions"]``.
ABORT = "herald.abort"


class LimitedH11Protocol(H11Protocol):
    """h11 with a connection cap, header and body timeouts, and an abort extension."""

    max_connections = 1000
    header_timeout = 10.0
    body_timeout = 30.0
    #: connections aborted by the cap or a timeout, in this process (all servers)
    aborted = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer: asyncio.TimerHandle | None = None
        self._armed_cycle: Any = None
        if len(self.connections) > self.max_connections:
            LimitedH11Protocol.aborted += 1
            transport.abort()
            return
        self._arm(self.header_timeout, self._headers_late)

    def _arm(self, delay: float, callback: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_cycle = self.cycle
        self._timer = self.loop.call_later(delay, callback)

    def _abort(self) -> None:
        if not self.transport.is_closing() and self.transport.get_protocol() is self:
            LimitedH11Protocol.aborted += 1
            self.transport.abort()

    def _headers_late(self) -> None:
        self._timer = None
        # No new request since the timer was armed, and none in progress: idle or slowloris.
        if self.cycle is self._armed_cycle and (self.cycle is None or self.cycle.response_complete):
            self._abort()

    def _body_late(self) -> None:
        self._timer = None
        if self.cycle is self._armed_cycle and self.cycle is not None and self.cycle.more_body:
            self._abort()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        cycle = self.cycle
        if cycle is not None and cycle is not before:
            # A request's headers arrived: the app may abort its connection; its body must
            # follow in time.
            scope: dict[str, Any] = self.scope  # type: ignore[assignment]
            scope.setdefault("extensions", {})[ABORT] = self._abort
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if cycle.more_body:
                self._arm(self.body_timeout, self._body_late)

    def handle_websocket_upgrade(self, event: Any) -> None:
        # The connection is the WebSocket protocol's from here on: this one's header timer
        # would keep it (parser, scope, headers: ~6 KB) alive for ``header_timeout`` more.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm(self.header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_timer", None) is not None:
            assert self._timer is not None
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)


def http_protocol(config: GatewayConfig) -> type[LimitedH11Protocol]:
    """A :class:`LimitedH11Protocol` with ``config``'s limits, for uvicorn's ``http=``."""
    return type(
        "GatewayH11Protocol",
        (LimitedH11Protocol,),
        {
            "max_connections": config.max_connections,
            "header_timeout": config.header_timeout,
            "body_timeout": config.body_timeout,
        },
    )
