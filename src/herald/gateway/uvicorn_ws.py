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
    """What the extension holds: ``write(frame)``, the transport's ``writable`` flag, ``abort``.

    ``write`` takes one or more complete server frames and returns False, writing nothing,
    when the connection is not open for data (closing, closed) or the transport's buffer is
    over its high-water mark (``writable`` is clear until it drains). ``abort`` drops the
    connection at once, with whatever is still buffered for it.
    """

    write: Callable[[bytes], bool]
    writable: asyncio.Event
    abort: Callable[[], None]


#: Seconds a client has to answer the gateway's close frame before its connection is aborted.
CLOSE_TIMEOUT = 5.0


class FrameWriterProtocol(WebSocketsSansIOProtocol):
    """``websockets-sansio`` with the :data:`EXTENSION` in each WebSocket scope.

    A connection the app closed is *aborted* if the client has not completed the close
    within :data:`CLOSE_TIMEOUT`: uvicorn's own timer only calls ``transport.close()``, which
    waits for the client to read what is buffered for it; a client that never reads (the
    slow client the gateway just cut) then holds its connection and that buffer forever.
    """

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        # Only with no extension negotiated (no permessage-deflate) are frames client-neutral.
        if scope is not None and not self.conn.extensions:
            scope["extensions"][EXTENSION] = FrameWriter(
                write=self.write_frames, writable=self.writable, abort=self.abort
            )

    def abort(self) -> None:
        """Drop the connection now, unsent data included."""
        if not self.disconnected:
            self.transport.abort()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message.get("type") == "websocket.close" and self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.abort)

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
