"""Running the gateway under uvicorn until Ctrl-C (``herald serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Generator

import uvicorn
from rich.console import Console
from starlette.applications import Starlette

from .app import create_app
from .config import GatewayConfig
from .uvicorn_ws import WS_PROTOCOL

#: uvicorn's ``websockets-sansio`` WebSocket implementation, letting the fan-out write the
#: same ready-made frame to every client (see ``uvicorn_ws.py``).
WS_IMPL = WS_PROTOCOL


def uvicorn_config(
    app: Starlette, config: GatewayConfig, host: str, port: int, log_level: str = "warning"
) -> uvicorn.Config:
    """uvicorn's settings for the gateway.

    No permessage-deflate: it would compress every frame once per client (a fan-out sends the
    same bytes to each) and holds two zlib streams, ~46 KiB, per connection.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ws=WS_IMPL,
        ws_max_size=config.max_message_size,
        ws_per_message_deflate=False,
        lifespan="on",
    )


class _Server(uvicorn.Server):
    """uvicorn's server, with Ctrl-C handled by the caller (uvicorn would re-raise it at exit)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def run_gateway(
    url: str,
    host: str,
    port: int,
    console: Console,
    alive: Callable[[], bool],
    config: GatewayConfig | None = None,
    stopping: threading.Event | None = None,
) -> None:
    """Serve the gateway for ``url`` on ``host:port`` until Ctrl-C, SIGTERM, ``stopping`` is
    set (a signal the caller caught before the gateway ran), or ``alive()`` turns false (the
    embedded server died)."""
    config = config or GatewayConfig()
    app = create_app(url, config)
    server = _Server(uvicorn_config(app, config, host, port))

    async def main() -> None:
        async def watch() -> None:
            announced = False
            while not server.should_exit:
                if not alive():
                    console.print("[bold red]the Redis server stopped[/]")
                    server.should_exit = True
                if server.started and not announced:
                    announced = True
                    sockets = [s for srv in server.servers for s in srv.sockets]
                    real = sockets[0].getsockname()[1] if sockets else port
                    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
                    console.print(f"dashboard and gateway: [bold]http://{shown}:{real}[/]")
                    console.print("Ctrl-C to stop")
                await asyncio.sleep(0.1)

        loop = asyncio.get_running_loop()

        def stop() -> None:
            # A second Ctrl-C does not wait for open connections.
            server.force_exit = server.should_exit
            server.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        if stopping is not None and stopping.is_set():
            stop()
        watcher = loop.create_task(watch())
        try:
            await server.serve()
        finally:
            watcher.cancel()

    asyncio.run(main())


class BackgroundGateway:
    """The gateway served by uvicorn on a thread of its own, on a free port (tests, benchmarks).

    Example::

        with BackgroundGateway(url) as gw:
            httpx.post(f"{gw.url}/topics/demo", json={"a": 1})
    """

    def __init__(
        self, url: str, config: GatewayConfig | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.config = config or GatewayConfig()
        self.app = create_app(url, self.config)
        self.host = host
        self.port = 0
        self._server = _Server(uvicorn_config(self.app, self.config, host, 0))
        self._thread = threading.Thread(target=self._run, name="herald-gateway", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve())
        except BaseException as exc:  # reported by start()
            self._error = exc

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    def start(self, timeout: float = 10.0) -> BackgroundGateway:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"gateway did not start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("gateway did not start in time")
            time.sleep(0.01)
        sockets = [s for srv in self._server.servers for s in srv.sockets]
        self.port = sockets[0].getsockname()[1]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
