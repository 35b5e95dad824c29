"""The asyncio protocol of one RESP2 connection: replies matched to callers in order."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis

from herald._errors import (
    AuthenticationFailed,
    ConnectionLost,
    HeraldError,
    PermissionDenied,
    ServerError,
)

Reply = Any
PushHandler = Callable[[list[Any]], None]
# Pub/Sub messages arrive unrequested; everything else answers a command, in order.
PUSH_KINDS = frozenset((b"message", b"pmessage", b"smessage", b"sunsubscribe"))


def error_from_reply(reply: hiredis.ReplyError) -> HeraldError:
    text = str(reply)
    code = text.split(" ", 1)[0]
    if code == "NOPERM":
        return PermissionDenied(text)
    if code in ("WRONGPASS", "NOAUTH") or text.startswith("ERR invalid password"):
        return AuthenticationFailed(text)
    return ServerError(text)


class RespProtocol(asyncio.Protocol):
    """Parses replies with ``hiredis.Reader``; resolves one waiter per reply.

    A waiter of ``None`` is a fire-and-forget command (a live publish): its reply is consumed and
    only an error is counted. ``on_push`` receives Pub/Sub messages on a subscriber connection.
    """

    def __init__(
        self,
        on_push: PushHandler | None,
        on_lost: Callable[[RespProtocol, Exception | None], None],
        on_resume: Callable[[], None] | None = None,
    ) -> None:
        self._reader = hiredis.Reader()
        self.waiters: deque[asyncio.Future[Reply] | None] = deque()
        self._on_push = on_push
        self._on_lost = on_lost
        self._on_resume = on_resume
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self._drain: asyncio.Future[None] | None = None
        self.errors = 0  # error replies to fire-and-forget commands
        self.last_error: str | None = None
        self.lost = False
        self.abort_error: Exception | None = None
        self.on_error: Callable[[str], None] | None = None  # every error reply, e.g. READONLY

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not always an asyncio.Transport subclass (uvloop's are not).
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=4 * 1024 * 1024)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiters = self.waiters
        on_push = self._on_push
        try:
            reply = reader.gets()
            while reply is not False:
                if on_push is not None and type(reply) is list and reply and reply[0] in PUSH_KINDS:
                    on_push(reply)
                else:
                    self._resolve(waiters.popleft() if waiters else None, reply)
                reply = reader.gets()
        except hiredis.ProtocolError as exc:
            self._abort(ConnectionLost(f"protocol error from server: {exc}"))

    def _resolve(self, waiter: asyncio.Future[Reply] | None, reply: Reply) -> None:
        if waiter is None:
            if isinstance(reply, hiredis.ReplyError):
                self.errors += 1
                self.last_error = str(reply)
                if self.on_error is not None:
                    self.on_error(self.last_error)
            return
        if isinstance(reply, hiredis.ReplyError):
            if self.on_error is not None:
                self.on_error(str(reply))
            if not waiter.done():
                waiter.set_exception(error_from_reply(reply))
        elif waiter.done():
            return
        else:
            waiter.set_result(reply)

    def _abort(self, exc: Exception) -> None:
        """Drop the connection now; ``exc`` is the reason connection_lost reports (not None)."""
        self.abort_error = exc
        if self.transport is not None:
            self.transport.abort()
        self._fail_waiters(exc)

    def _fail_waiters(self, exc: Exception) -> None:
        waiters = self.waiters
        while waiters:
            w = waiters.popleft()
            if w is not None and not w.done():
                w.set_exception(exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None
        if self._on_resume is not None:
            self._on_resume()

    async def drain(self) -> None:
        if not self.paused or self.lost:
            return
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drain)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        exc = exc or self.abort_error  # an abort reports None, which would read "closed by server"
        self._fail_waiters(ConnectionLost(f"connection lost: {exc or 'closed by server'}"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._on_lost(self, exc)
