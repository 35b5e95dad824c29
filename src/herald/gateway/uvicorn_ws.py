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
from collections import deque
from collections.abc import Callable
from typing import Any, TypedDict, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

#: The key of the extension in ``scope["extensions"]``.
EXTENSION = "herald.frames"
#: uvicorn's ``ws=`` setting for this protocol.
WS_PROTOCOL = "herald.gateway.uvicorn_ws:FrameWriterProtocol"


class Flag:
    """``asyncio.Event``'s ``set``/``clear``/``is_set``/``wait`` without its deque.

    Every WebSocket connection holds one (its transport's ``writable`` flag): an
    ``asyncio.Event`` allocates a deque of 760 bytes for waiters that are almost never
    there; this one makes a list only while somebody waits.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            waiters, self._waiters = self._waiters, None
            for fut in waiters or ():
                if not fut.done():
                    fut.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if self._waiters is not None and fut in self._waiters:
                self._waiters.remove(fut)
        return True


class Inbox:
    """The ``put_nowait``/``get``/``empty`` of an unbounded ``asyncio.Queue``, without its
    three deques (2.3 KB for every connection, mostly empty): what uvicorn's protocol queues
    for the app's ``receive``."""

    __slots__ = ("_items", "_ready")

    def __init__(self) -> None:
        self._items: deque[Any] | list[Any] = []
        self._ready = Flag()

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._ready.set()

    async def get(self) -> Any:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        if isinstance(self._items, list):
            if len(self._items) == 1:
                return self._items.pop()
            self._items = deque(self._items)  # a backlog: taken from the front in O(1)
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class FrameWriter(TypedDict):
    """What the extension holds: ``write(frame)``, the transport's ``writable`` flag, ``abort``.

    ``write`` takes one or more complete server frames and returns False, writing nothing,
    when the connection is not open for data (closing, closed) or the transport's buffer is
    over its high-water mark (``writable`` is clear until it drains). ``abort`` drops the
    connection at once, with whatever is still buffered for it.
    """

    write: Callable[[bytes], bool]
    writable: Flag
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Lighter twins of uvicorn's receive queue and writable event (same calls).
        self.queue = Inbox()  # type: ignore[assignment]
        writable = Flag()
        writable.set()
        self.writable = writable  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        # Only with no extension negotiated (no permessage-deflate) are frames client-neutral.
        if scope is not None and not self.conn.extensions:
            scope["extensions"][EXTENSION] = FrameWriter(
                write=self.write_frames, writable=cast(Flag, self.writable), abort=self.abort
            )

    def abort(self) -> None:
        """Drop the connection now, unsent data included."""
        if not self.disconnected:
            self.transport.abort()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete:
            # The handshake's request and response (their headers: ~3 KB) are not read again.
            self.request = self.response = None  # type: ignore[assignment]
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
