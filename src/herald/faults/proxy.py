"""A TCP relay between clients and a server that a fault scenario (or a test) can break.

It runs its own event loop on a thread, so it works the same under any client: asyncio code,
threads, or a test that blocks. Every fault is on loopback; no external tool (``tc netem`` is not
available everywhere) is needed:

- :meth:`Proxy.down` / :meth:`Proxy.up`: the server is gone (connections reset, nothing listens)
  and back on the same port;
- :meth:`Proxy.cut`: every relayed connection is reset, new ones are accepted (a flapping link);
- :meth:`Proxy.freeze` / :meth:`Proxy.thaw`: a half-open link: connections stay open and nothing
  moves in the frozen direction(s) (TCP back-pressure fills the buffers, as with a dead peer);
- :attr:`Proxy.delay`: seconds added to every chunk in each direction, order kept;
- :attr:`Proxy.blackhole`: what the client sends is swallowed (its commands never arrive).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from herald._server import free_port


class Proxy:
    """A TCP relay to ``upstream_host:upstream_port`` on 127.0.0.1, on its own thread.

    Example::

        with Proxy(server.port) as proxy:
            hub = herald.AsyncClient(proxy.url, probe_interval=0.5)
            proxy.freeze()   # half-open: the client's probes go unanswered
            proxy.thaw()
    """

    def __init__(
        self, upstream_port: int, *, upstream_host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self.blackhole = False
        self.swallowed = 0  # bytes swallowed by the blackhole
        self.delay = 0.0  # seconds added to each chunk, each way
        self.accepted = 0  # connections accepted so far
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="herald-proxy")
        self._thread.daemon = True
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._to_server = asyncio.Event()
        self._to_client = asyncio.Event()
        self._to_server.set()
        self._to_client.set()
        self._closed = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """Relayed connections open now (each counts its two sockets once)."""
        return len(self._writers) // 2

    # -- controls (any thread but the proxy's) ---------------------------------------------

    def up(self) -> None:
        """Listen (again) on :attr:`port`."""
        self._run(self._up())

    def down(self) -> None:
        """Stop listening and reset every relayed connection: to clients, the server died."""
        self._run(self._down(listen=False))

    def cut(self) -> None:
        """Reset every relayed connection; keep listening (clients reconnect at once)."""
        self._run(self._down(listen=True))

    def freeze(self, *, to_server: bool = True, to_client: bool = True) -> None:
        """Stop moving bytes in the given direction(s); connections stay open (half-open)."""

        def stop() -> None:
            if to_server:
                self._to_server.clear()
            if to_client:
                self._to_client.clear()

        self._call(stop)

    def thaw(self) -> None:
        """Move bytes again in both directions (what waited in the buffers goes first)."""

        def go() -> None:
            self._to_server.set()
            self._to_client.set()

        self._call(go)

    @property
    def frozen(self) -> bool:
        return not (self._to_server.is_set() and self._to_client.is_set())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.thaw()
        self.down()
        self._run(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> Proxy:
        self.up()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(5)

    def _call(self, fn: Callable[[], object]) -> None:
        async def call() -> None:
            fn()

        self._run(call())

    # -- the relay (the proxy's thread) ----------------------------------------------------

    async def _up(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _down(self, *, listen: bool) -> None:
        if not listen and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        await asyncio.sleep(0)  # let the relays see the abort and finish

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer, self._to_server, upstream=True),
            self._pipe(up_reader, writer, self._to_client, upstream=False),
        )

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        flowing: asyncio.Event,
        *,
        upstream: bool,
    ) -> None:
        delayed: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.get_running_loop().create_task(self._send_later(delayed, writer))
        try:
            while True:
                if not flowing.is_set():
                    await flowing.wait()  # frozen: not reading lets TCP back-pressure build up
                data = await reader.read(65536)
                if not data:
                    break
                if upstream and self.blackhole:
                    self.swallowed += len(data)
                    continue
                if self.delay > 0 or not delayed.empty():
                    delayed.put_nowait((time.monotonic() + self.delay, data))
                    continue
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            delayed.put_nowait(None)
            try:
                await sender
            except OSError:
                pass
            writer.transport.abort()
            self._writers.discard(writer)

    async def _send_later(
        self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
