"""A connection that stays up: handshake, auto-pipelined writes, batch frames, reconnect, probes.

Every command queued during one event-loop iteration (from any task, or from any thread through
the ``*_threadsafe`` methods) goes out in one ``send``. Consecutive live publishes to one topic
are packed into one batch frame (``_wire.batch``) when batching is on: under load many messages
share one PUBLISH; at low load each message still leaves at once, alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from typing import Any

from herald._core import wire as _wire
from herald._core.backoff import Backoff
from herald._core.resp import Arg, command
from herald._core.url import Endpoint, tls_refused
from herald._errors import (
    ClientClosed,
    ConfigurationError,
    ConnectionFailed,
    ConnectionLost,
    HeraldError,
    ServerError,
    Timeout,
)

from .interface import BLOCKED, FLUSHED, QUEUED, Prefix, Resolver
from .protocol import PushHandler, Reply, RespProtocol

log = logging.getLogger("herald")

MAX_BATCH_MESSAGES = 1000
MAX_BATCH_BYTES = 256 * 1024


class Tasks:
    """The background tasks of a connection, cancelled when it closes."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, loop: asyncio.AbstractEventLoop, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class Link:
    """One logical connection to the server that reconnects by itself."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        name: str,
        on_push: PushHandler | None = None,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        on_disconnect: Callable[[Exception | None], None] | None = None,
        connect_timeout: float = 5.0,
        probe_interval: float = 5.0,
        probe_timeout: float | None = None,
        max_pending_bytes: int = 8 * 1024 * 1024,
        flush_at: int = 256 * 1024,
        resolver: Resolver | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.resolver = resolver
        self._retry_now: asyncio.Event | None = None
        self.address = endpoint.address  # the node connected to (resolved), for messages
        self.name = name
        self._on_push = on_push
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.connect_timeout = connect_timeout
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout if probe_timeout is not None else probe_interval
        self.max_pending_bytes = max_pending_bytes
        self.flush_at = flush_at

        self.loop: asyncio.AbstractEventLoop | None = None
        self._proto: RespProtocol | None = None
        self._connected: asyncio.Event | None = None
        self._closed = False
        self._tasks = Tasks()
        self._connecting: asyncio.Task[None] | None = None  # see ensure_connected

        # Write side; guarded by _lock because user threads queue publishes directly.
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._pending_waiters: list[asyncio.Future[Reply] | None] = []
        self._pending_bytes = 0
        self._scheduled = False
        self._batch_prefix: Prefix | None = None
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._writable = threading.Event()
        self._sync_waiting = False

        self.server: dict[str, Any] = {}
        self.reconnects = 0
        self.disconnected_since: float | None = None
        # When the last probe that was answered was sent (time.time()): everything the server
        # sent on the connection before it read that PING has arrived.
        self.probe_answered = 0.0

    # -- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._proto is not None and not self._proto.lost

    @property
    def connection(self) -> object | None:
        """The connection in use now (``None`` while there is none): a reply received and a
        command answered later came over one connection only if this is the same object at
        both moments. What ``WAIT``/``WAITAOF`` confirm is that connection's writes."""
        return self._proto

    @property
    def errors(self) -> int:
        """Error replies to fire-and-forget commands on the current connection."""
        return self._proto.errors if self._proto else 0

    @property
    def last_error(self) -> str | None:
        """The last of those error replies."""
        return self._proto.last_error if self._proto else None

    def for_topic(self, topic: str) -> Link:
        """The link a command about ``topic`` goes out on, to wait for its connection alone
        (a sharded client's shard; this link itself otherwise)."""
        return self

    async def connect(self) -> None:
        """Connect once; raise :class:`ConnectionFailed` if the server cannot be reached."""
        self.loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        proto = await self._open()
        if self._closed:
            # Closed while connecting (a shielded ensure_connected outlives its caller): the
            # new connection must not stay open behind a closed Link.
            if proto.transport is not None:
                proto.transport.abort()
            raise ClientClosed("connection closed")
        await self._established(proto)
        if self.probe_interval > 0:
            self._spawn(self._probe())

    async def ensure_connected(self) -> None:
        """:meth:`connect` once, however many callers wait for it; after a failure the next
        call tries again. (The first subscription of a client connects its subscriber.)"""
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self.connect())
        try:
            await asyncio.shield(self._connecting)
        except BaseException:
            if self._connecting.done():
                self._connecting = None
            raise

    async def wait_connected(self, timeout: float | None) -> None:
        assert self._connected is not None
        if self._closed:
            raise ClientClosed("connection closed")
        if self._connected.is_set():
            return
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            raise Timeout(
                f"not connected to {self.endpoint.address} within {timeout}s", timeout
            ) from None
        if self._closed:
            raise ClientClosed("connection closed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._tasks.cancel()
        proto, self._proto = self._proto, None
        if self._connected is not None:
            self._connected.set()  # wake waiters so they see the close
        if self.resolver is not None:
            with contextlib.suppress(Exception):
                await self.resolver.release(self)
        with self._lock:
            waiters, self._pending_waiters = self._pending_waiters, []
            self._pending.clear()
            self._batch.clear()
            self._batch_prefix = None
        for w in waiters:
            if w is not None and not w.done():
                w.set_exception(ClientClosed("connection closed"))
        self._writable.set()
        if proto is not None and proto.transport is not None:
            proto.transport.close()
            proto._fail_waiters(ClientClosed("connection closed"))
            if self.endpoint.tls:
                # A TLS close waits for the server's close_notify; a socket still open when
                # the event loop closes leaks. Wait a moment for it, then drop it.
                for _ in range(50):
                    if proto.lost:
                        return
                    await asyncio.sleep(0.01)
                proto.transport.abort()
                await asyncio.sleep(0)

    # -- connecting --------------------------------------------------------------------------

    async def _open(self) -> RespProtocol:
        ep = self.endpoint
        loop = self.loop
        assert loop is not None

        def factory() -> RespProtocol:
            proto = RespProtocol(self._on_push, self._lost, self._resumed)
            if self.resolver is not None:
                proto.on_error = self._server_error
            return proto

        proto: RespProtocol | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.resolver is not None:
                    ep = await self.resolver.resolve(self)
                    self.address = ep.address
                if ep.path:
                    _, proto = await loop.create_unix_connection(factory, ep.path)
                else:
                    _, proto = await loop.create_connection(
                        factory,
                        ep.host,
                        ep.port,
                        ssl=ep.ssl_context(),
                        server_hostname=ep.host if ep.tls else None,
                    )
                await self._handshake(proto)
        except BaseException as exc:
            # A failed handshake (wrong password, ACL, bad db) must not leave the socket open.
            if proto is not None and proto.transport is not None:
                proto.transport.abort()
            # Herald's own errors first: ConnectionFailed and ConnectionLost are OSErrors too.
            if isinstance(exc, ConnectionLost):
                if ep.tls:
                    raise ConnectionFailed(tls_refused(ep, ep.address, exc)) from exc
                raise ConnectionFailed(f"{ep.address} closed the connection: {exc}") from exc
            if isinstance(exc, HeraldError):
                raise
            if isinstance(exc, TimeoutError):
                raise ConnectionFailed(
                    f"cannot connect to {ep.address}: no answer within {self.connect_timeout}s"
                ) from None
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise ConnectionFailed(
                    f"TLS handshake with {ep.address} failed: {exc} (ssl_ca_certs= names the CA "
                    "that signed the server's certificate)"
                ) from exc
            if isinstance(exc, ssl.SSLError):
                raise ConnectionFailed(f"TLS handshake with {ep.address} failed: {exc}") from exc
            if isinstance(exc, OSError):
                raise ConnectionFailed(
                    f"cannot connect to {ep.address}: {exc.strerror or exc}"
                ) from exc
            raise
        return proto

    async def _handshake(self, proto: RespProtocol) -> None:
        ep = self.endpoint
        hello: list[Arg] = ["HELLO", "2"]
        if ep.password is not None:
            hello += ["AUTH", ep.username or "default", ep.password]
        hello += ["SETNAME", self.name]
        try:
            reply = await _direct(proto, *hello)
            it = iter(reply)
            self.server = {k.decode(): v for k, v in zip(it, it, strict=True)}
        except ServerError as exc:
            if "unknown command" not in exc.reply.lower():
                raise
            # Servers older than Redis 6 have no HELLO.
            if ep.password is not None:
                await _direct(proto, "AUTH", ep.password)
            self.server = {}
        if ep.db:
            try:
                await _direct(proto, "SELECT", ep.db)
            except ServerError as exc:
                raise ConfigurationError(f"cannot use database {ep.db}: {exc.reply}") from exc
        # A server still loading its data after a restart answers LOADING to every command:
        # the connection is ready once it has loaded (within connect_timeout, else a retry).
        while True:
            try:
                await _direct(proto, "PING")
                return
            except ServerError as exc:
                if not exc.reply.startswith("LOADING"):
                    raise
            await asyncio.sleep(0.05)

    def _server_error(self, reply: str) -> None:
        # With a resolver (Sentinel), READONLY means the node was demoted under this connection:
        # never keep writing to it; reconnect to wherever the primary is now.
        if reply.startswith("READONLY"):
            self.drop(f"{self.address} is a replica now ({reply})")

    def drop(self, reason: str) -> None:
        """Abort the current connection, or cut a reconnect's backoff short: the Link connects
        again at once, asking its resolver where to."""
        proto = self._proto
        if proto is not None and not proto.lost and proto.transport is not None:
            log.warning("connection %s to %s dropped: %s", self.name, self.address, reason)
            proto._abort(ConnectionLost(reason))
        elif self._retry_now is not None:
            self._retry_now.set()

    async def _established(self, proto: RespProtocol) -> None:
        assert self._connected is not None
        self._proto = proto
        self._flush()
        if self.on_connect is not None:
            await self.on_connect()
        if self._proto is proto and not proto.lost:
            self.disconnected_since = None
            self._connected.set()

    def _lost(self, proto: RespProtocol, exc: Exception | None) -> None:
        if proto is not self._proto:
            return
        self._proto = None
        self.disconnected_since = time.time()
        if self._connected is not None:
            self._connected.clear()
        if self._closed:
            return
        log.warning("connection %s to %s lost: %s", self.name, self.address, exc)
        if self.on_disconnect is not None:
            self.on_disconnect(exc)
        self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        backoff = Backoff()
        self._retry_now = asyncio.Event()
        while not self._closed:
            # wake() (the resolver learned where to go) cuts the wait short.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff.next()):
                    await self._retry_now.wait()
            self._retry_now.clear()
            try:
                proto = await self._open()
            except HeraldError as exc:
                log.info("reconnect %s failed: %s", self.name, exc)
                continue
            self.reconnects += 1
            log.info("connection %s to %s restored", self.name, self.address)
            await self._established(proto)
            return

    async def _probe(self) -> None:
        # A PING answered proves the whole path, including a subscriber connection's read side.
        while not self._closed:
            await asyncio.sleep(self.probe_interval)
            proto = self._proto
            if proto is None or proto.lost:
                continue
            sent = time.time()
            try:
                async with asyncio.timeout(self.probe_timeout):
                    await self.execute("PING")
                self.probe_answered = sent
            except TimeoutError:
                if proto is self._proto and proto.transport is not None:
                    log.warning(
                        "connection %s: no reply to probe within %ss, reconnecting",
                        self.name,
                        self.probe_timeout,
                    )
                    proto._abort(ConnectionLost(f"no reply to probe within {self.probe_timeout}s"))
            except HeraldError:
                pass

    def _spawn(self, coro: Awaitable[None]) -> None:
        assert self.loop is not None
        self._tasks.spawn(self.loop, coro)

    def link_for_key(self, key: str | bytes) -> Link:
        """This link: one server serves every key."""
        return self

    def set_unsharded(self, channels: AbstractSet[bytes], sharded: bool = True) -> None:
        """Nothing to do: ``PUBLISH`` is the only publish on one server."""

    # -- writing -----------------------------------------------------------------------------

    def execute(self, *args: Arg) -> asyncio.Future[Reply]:
        """Queue a command (event-loop thread only); the future resolves with its reply."""
        assert self.loop is not None
        if self._closed:
            raise ClientClosed("connection closed")
        fut: asyncio.Future[Reply] = self.loop.create_future()
        data = command(*args)
        with self._lock:
            scheduled = self._queue_raw_locked(data, [fut])
        self._kick(scheduled)
        return fut

    def _queue_publish(self, prefix: Prefix, frame: bytes, batchable: bool) -> tuple[bool, int]:
        """Queue one PUBLISH-like command; return (flush already scheduled, pending bytes)."""
        with self._lock:
            if self._closed:
                raise ClientClosed("connection closed")
            self._queue_locked(prefix, frame, batchable)
            scheduled, self._scheduled = self._scheduled, True
            return scheduled, self._pending_bytes

    def _queue_locked(self, prefix: Prefix, frame: bytes, batchable: bool) -> None:
        # Caller holds _lock. A publish to the topic of the open batch joins it while it has room.
        size = len(frame)
        if self._batch_prefix is not None:
            if (
                batchable
                and prefix is self._batch_prefix
                and len(self._batch) < MAX_BATCH_MESSAGES
                and self._batch_bytes + size <= MAX_BATCH_BYTES
            ):
                self._batch.append(frame)
                self._batch_bytes += size
                self._pending_bytes += size
                return
            self._close_batch()
        if batchable or not isinstance(prefix, bytes):
            self._batch_prefix = prefix
            self._batch.append(frame)
            self._batch_bytes = size
        else:
            self._pending += (prefix, b"%d\r\n" % size, frame, b"\r\n")
            self._pending_waiters.append(None)
        self._pending_bytes += size

    def try_publish(self, prefix: Prefix, frames: list[bytes], batchable: bool) -> int:
        """Queue fire-and-forget publishes to one topic (event-loop thread), all or none.

        Returns :data:`QUEUED`; :data:`FLUSHED` when the buffer reached ``flush_at`` and was
        written at once (the caller should yield to the loop); or :data:`BLOCKED`, nothing
        queued, while the socket is paused or the outage buffer is full: the caller waits with
        :meth:`wait_writable` and tries again, so a publish refused with :class:`Timeout` was
        never queued and the outage buffer stays within ``max_pending_bytes`` (plus one call).
        """
        # Written out as in try_send on purpose: a shared check would cost a call per publish.
        if self._pending_bytes >= self.max_pending_bytes:
            return BLOCKED
        proto = self._proto
        if proto is not None and proto.paused and not proto.lost:
            return BLOCKED
        with self._lock:
            if self._closed:
                raise ClientClosed("connection closed")
            for frame in frames:
                self._queue_locked(prefix, frame, batchable)
            scheduled, self._scheduled = self._scheduled, True
            pending = self._pending_bytes
        if pending >= self.flush_at:
            self._flush()
            return FLUSHED
        self._kick(scheduled)
        return QUEUED

    def try_send(self, data: bytes, waiters: list[asyncio.Future[Reply] | None]) -> int:
        """Queue pre-encoded commands (event-loop thread): ``data`` holds one command per
        waiter, in order; a ``None`` waiter's reply is consumed (an error reply is counted in
        :attr:`errors`). Returns :data:`QUEUED`, :data:`FLUSHED` or :data:`BLOCKED` (nothing
        queued) exactly as :meth:`try_publish` does, with the same backpressure."""
        # Written out as in try_publish on purpose: a shared check would cost a call per publish.
        if self._pending_bytes >= self.max_pending_bytes:
            return BLOCKED
        proto = self._proto
        if proto is not None and proto.paused and not proto.lost:
            return BLOCKED
        with self._lock:
            if self._closed:
                raise ClientClosed("connection closed")
            scheduled = self._queue_raw_locked(data, waiters)
            pending = self._pending_bytes
        if pending >= self.flush_at:
            self._flush()
            return FLUSHED
        self._kick(scheduled)
        return QUEUED

    def send_nowait(self, data: bytes, waiters: list[asyncio.Future[Reply] | None]) -> None:
        """Queue pre-encoded commands as :meth:`try_send` does, but even past the buffer limit
        (acks: small, and refusing them would only cause redeliveries)."""
        assert self.loop is not None
        with self._lock:
            if self._closed:
                raise ClientClosed("connection closed")
            scheduled = self._queue_raw_locked(data, waiters)
        self._kick(scheduled)

    def _kick(self, scheduled: bool) -> None:
        """After queueing on the event-loop thread: write at once when the server has answered
        everything sent before (nothing in flight: a lone command would only wait for the end
        of this loop iteration, which is latency); else flush once at the end of the iteration
        with whatever else is queued by then, so that a busy connection still sends batches.
        Nagle's rule, minus its timer: one extra write per loop iteration at most."""
        proto = self._proto
        if proto is not None and not proto.waiters:
            self._flush()
        elif not scheduled:
            assert self.loop is not None
            self.loop.call_soon(self._flush)

    def _queue_raw_locked(self, data: bytes, waiters: list[asyncio.Future[Reply] | None]) -> bool:
        """Queue pre-encoded commands, one waiter each (caller holds _lock): after the open batch,
        so order is kept. Returns whether a flush was already scheduled."""
        if self._batch_prefix is not None:
            self._close_batch()
        self._pending.append(data)
        self._pending_waiters += waiters
        self._pending_bytes += len(data)
        scheduled, self._scheduled = self._scheduled, True
        return scheduled

    def _close_batch(self) -> None:
        # Caller holds _lock.
        batch = self._batch
        pfx = self._batch_prefix
        assert pfx is not None
        if isinstance(pfx, bytes):
            frame = batch[0] if len(batch) == 1 else _wire.batch(batch)
            self._pending += (pfx, b"%d\r\n" % len(frame), frame, b"\r\n")
        else:
            self._pending.append(pfx.build(batch))
        self._pending_waiters.append(None)
        self._batch = []
        self._batch_bytes = 0
        self._batch_prefix = None

    def publish_nowait(self, prefix: bytes, frame: bytes, batchable: bool) -> bool:
        """Queue a fire-and-forget publish even past the buffer limit (replies to requests,
        which must not be refused); True if the caller should yield or wait for room."""
        scheduled, pending = self._queue_publish(prefix, frame, batchable)
        if pending >= self.flush_at:
            self._flush()
            return True
        self._kick(scheduled)
        return self.blocked

    def publish_threadsafe(
        self, prefix: bytes, frame: bytes, batchable: bool, timeout: float | None
    ) -> None:
        """Queue a fire-and-forget publish from any thread; block first while the buffer is full."""
        if self.blocked:
            self._wait_writable_sync(timeout)
        scheduled, _ = self._queue_publish(prefix, frame, batchable)
        if not scheduled:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self._flush)

    async def wait_writable(self, timeout: float | None) -> None:
        """Wait until the socket drains and the reconnect buffer has room (backpressure)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self._closed:
                        raise ClientClosed("connection closed")
                    proto = self._proto
                    if proto is not None and not proto.lost:
                        if not proto.paused:
                            return
                        await proto.drain()
                    elif self._pending_bytes < self.max_pending_bytes:
                        return
                    else:
                        assert self._connected is not None
                        await self._connected.wait()
        except TimeoutError:
            raise Timeout(
                f"publish buffer to {self.endpoint.address} still full after {timeout}s", timeout
            ) from None

    @property
    def blocked(self) -> bool:
        """True while a publish must wait: the socket is paused or the outage buffer is full."""
        proto = self._proto
        if proto is not None and not proto.lost:
            return proto.paused or self._pending_bytes >= self.max_pending_bytes
        return self._pending_bytes >= self.max_pending_bytes

    def _wait_writable_sync(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.blocked:
            if self._closed:
                raise ClientClosed("connection closed")
            self._sync_waiting = True
            self._writable.clear()
            if not self.blocked:
                break
            remaining: float | None = None  # typed: mypyc would infer None from this line
            if deadline is not None:
                remaining = deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise Timeout(
                    f"publish buffer to {self.endpoint.address} still full after {timeout}s",
                    timeout,
                )
            self._writable.wait(remaining if remaining is None else min(remaining, 0.1))
        self._sync_waiting = False

    def _resumed(self) -> None:
        if self._sync_waiting:
            self._writable.set()

    def flush_now(self) -> None:
        """Write what is queued now rather than at the end of this event-loop iteration (a
        consumer's read: the server works on it while the consumer's handler runs)."""
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            self._scheduled = False
            proto = self._proto
            if proto is None or proto.lost or proto.transport is None:
                return  # kept for the next connection
            if proto.transport.is_closing():
                # Aborted (by a probe) or closed by the server, connection_lost not yet run: a
                # write now would be dropped silently; keep it for the next connection instead.
                return
            if self._batch_prefix is not None:
                self._close_batch()
            if not self._pending:
                return
            data = b"".join(self._pending)
            proto.waiters.extend(self._pending_waiters)
            self._pending = []
            self._pending_waiters = []
            self._pending_bytes = 0
            proto.transport.write(data)
        if self._sync_waiting and not proto.paused:
            self._writable.set()


def _direct(proto: RespProtocol, *args: Arg) -> asyncio.Future[Reply]:
    """Send a command straight on a new connection, ahead of anything queued (handshake)."""
    fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    proto.waiters.append(fut)
    assert proto.transport is not None
    proto.transport.write(command(*args))
    return fut
