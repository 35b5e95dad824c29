"""uvicorn's WebSocket protocol with a way for the gateway to write ready-made frames.

ASGI's ``websocket.send`` frames every message for every client: for a fan-out of one message
to 1,000 clients that is 1,000 times the same framing, plus the ASGI layers, plus a task
switch per client. Server frames are unmasked and the gateway negotiates no extension, so the
bytes on the wire are the same for every client: this protocol (uvicorn's ``websockets-sansio``
one) offers the app, through the ASGI scope's ``extensions``, a call that writes such bytes
straight to the connection's transport. The gateway uses it when present and falls back to
plain ASGI sends under any other server or WebSocket implementation.

Example::

    import uvicorn
    from herald.gateway import create_app
    from herald.gateway.uvicorn_ws import WS_PROTOCOL

    uvicorn.run(create_app(), port=8080, ws=WS_PROTOCOL, ws_per_message_deflate=False)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypedDict

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

#: The key of the extension in ``scope["extensions"]``.
EXTENSION = "herald.frames"
#: uvicorn's ``ws=`` setting for this protocol.
WS_PROTOCOL = "herald.gateway.uvicorn_ws:FrameWriterProtocol"


class FrameWriter(TypedDict):
    """What the extension holds: ``write(frame)`` and the transport's ``writable`` flag.

    ``write`` takes one or more complete server frames and returns False, writing nothing,
    when the connection is not open for data (closing, closed) or the transport's buffer is
    over its high-water mark (``writable`` is clear until it drains).
    """

    write: Callable[[bytes], bool]
    writable: asyncio.Event


class FrameWriterProtocol(WebSocketsSansIOProtocol):
    """``websockets-sansio`` with the :data:`EXTENSION` in each WebSocket scope."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        # Only with no extension negotiated (no permessage-deflate) are frames client-neutral.
        if scope is not None and not self.conn.extensions:
            scope["extensions"][EXTENSION] = FrameWriter(
                write=self.write_frames, writable=self.writable
            )

    def write_frames(self, data: bytes) -> bool:
        """Write complete frames; False (nothing written) when not open or paused."""
        if (
            self.close_sent
            or self.disconnected
            or not self.handshake_complete
            or self.conn.state is not State.OPEN
            or not self.writable.is_set()
        ):
            return False
        self.transport.write(data)
        return True
