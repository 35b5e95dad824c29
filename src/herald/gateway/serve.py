"""Running the gateway under uvicorn until Ctrl-C (``herald serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Literal

import uvicorn
from rich.console import Console
from starlette.applications import Starlette

from .app import create_app
from .auth import AuthConfig
from .config import GatewayConfig
from .guard import LOOPBACK_HOSTS
from .uvicorn_http import http_protocol
from .uvicorn_ws import WS_PROTOCOL

Loop = Literal["auto", "asyncio", "uvloop"]
#: ``herald serve --loop``'s choices: ``auto`` is uvloop when it is installed, else asyncio's
#: own loop (as uvicorn's ``loop="auto"``).
LOOPS: tuple[Loop, ...] = ("auto", "asyncio", "uvloop")
#: ``herald serve``'s event loop when ``--loop`` is not given (see docs/benchmarks.md).
DEFAULT_LOOP: Loop = "asyncio"


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the event loop named by ``herald serve --loop``, for :class:`asyncio.Runner`:
    ``None`` for asyncio's own (the runner's default, as :func:`asyncio.run`).

    Raises:
        ValueError: ``uvloop`` when it is not installed, or a name not in :data:`LOOPS`.
    """
    if loop not in LOOPS:
        raise ValueError(f"unknown event loop {loop!r}: one of {', '.join(LOOPS)}")
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise ValueError(
                    "--loop uvloop: uvloop is not installed (pip install 'herald-pubsub[uvloop]')"
                ) from None
        else:
            return uvloop.new_event_loop
    return None


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which event loop ``loop`` is."""
    return "uvloop" if type(loop).__module__.partition(".")[0] == "uvloop" else "asyncio"


#: uvicorn's ``websockets-sansio`` WebSocket implementation, letting the fan-out write the
#: same ready-made frame to every client (see ``uvicorn_ws.py``).
WS_IMPL = WS_PROTOCOL


def uvicorn_config(
    app: Starlette, config: GatewayConfig, host: str, port: int, log_level: str = "warning"
) -> uvicorn.Config:
    """uvicorn's settings for the gateway.

    No permessage-deflate: it would compress every frame once per client (a fan-out sends the
    same bytes to each) and holds two zlib streams, ~46 KiB, per connection. HTTP through
    :func:`.uvicorn_http.http_protocol`: ``config``'s connection cap and header and body
    timeouts. No ``X-Forwarded-For``: uvicorn would trust it from 127.0.0.1, which is every
    local user, and the publish rate per client address would go by an address each request
    makes up.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=http_protocol(config),
        ws=WS_IMPL,
        ws_max_size=config.max_message_size,
        ws_per_message_deflate=False,
        proxy_headers=False,
        lifespan="on",
    )


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the gateway on this machine."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")


def _read_secret(path: Path, what: str, *, private: bool) -> bytes:
    st = os.stat(path)
    if st.st_mode & 0o022:
        raise ValueError(f"{what} {path} is writable by other users: chmod 600 it")
    if private and st.st_mode & 0o044:
        raise ValueError(f"{what} {path} is readable by other users: chmod 600 it")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {path} is not a file")
    return path.read_bytes()


def gateway_config(
    *,
    host: str,
    auth_key_file: Path | None = None,
    auth_jwks_file: Path | None = None,
    auth_issuer: str | None = None,
    auth_audience: str = "herald",
    auth_algorithms: tuple[str, ...] = (),
    allowed_hosts: tuple[str, ...] = (),
    allowed_origins: tuple[str, ...] = (),
    metrics: str = "auth",
    metrics_token_file: Path | None = None,
    max_connections: int = 1000,
    insecure: bool = False,
    tracing: bool = False,
) -> GatewayConfig:
    """The gateway's settings from ``herald serve``'s options.

    Raises:
        ValueError: contradictory or unsafe options: a non-loopback ``host`` without auth
            and without ``insecure``, a short HMAC key, a secret file others may read, ...
    """
    import jwt

    auth = None
    if auth_key_file is not None and auth_jwks_file is not None:
        raise ValueError("pass --auth-key-file or --auth-jwks-file, not both")
    if auth_key_file is not None or auth_jwks_file is not None:
        if not auth_issuer:
            raise ValueError("auth needs --auth-issuer (the iss every token must carry)")
        key: str | bytes | jwt.PyJWKSet
        algorithms = auth_algorithms or ("HS256",)
        if auth_jwks_file is not None:
            raw = _read_secret(auth_jwks_file, "JWKS file", private=False)
            try:
                key = jwt.PyJWKSet.from_dict(json.loads(raw))
            except (ValueError, jwt.PyJWTError) as exc:
                raise ValueError(f"cannot read the JWKS {auth_jwks_file}: {exc}") from None
            if any(k.key_type == "oct" for k in key.keys):
                # HMAC secrets: whoever reads them signs tokens, as with --auth-key-file.
                _read_secret(auth_jwks_file, "JWKS file with HMAC keys", private=True)
        else:
            assert auth_key_file is not None
            hmac = any(a.upper().startswith("HS") for a in algorithms)
            raw = _read_secret(auth_key_file, "key file", private=hmac)
            key = raw.strip() if hmac else raw.decode()
        auth = AuthConfig(
            key=key, audience=auth_audience, issuer=auth_issuer, algorithms=algorithms
        )
    elif auth_issuer or auth_algorithms:
        raise ValueError("--auth-issuer/--auth-algorithm need --auth-key-file or --auth-jwks-file")
    if auth is None and not insecure and not is_loopback(host):
        raise ValueError(
            f"refusing to serve the gateway on {host or 'all interfaces'} without auth: anyone "
            "who can reach it could publish, read history and replay dead letters. Turn auth "
            "on (--auth-key-file or --auth-jwks-file, with --auth-issuer), or pass --insecure"
        )
    hosts = [*LOOPBACK_HOSTS, *allowed_hosts]
    if not _wildcard(host) and host not in hosts:
        hosts.append(host.strip("[]"))
    token = None
    if metrics_token_file is not None:
        token = _read_secret(metrics_token_file, "metrics token file", private=True)
        token = token.strip()
    return GatewayConfig(
        auth=auth,
        allowed_hosts=tuple(hosts),
        allowed_origins=tuple(allowed_origins) or None,
        metrics=metrics,  # type: ignore[arg-type]  # checked by GatewayConfig
        metrics_token=token.decode() if token else None,
        max_connections=max_connections,
        tracing=tracing,
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
    loop: str = DEFAULT_LOOP,
) -> None:
    """Serve the gateway for ``url`` on ``host:port`` until Ctrl-C, SIGTERM, ``stopping`` is
    set (a signal the caller caught before the gateway ran), or ``alive()`` turns false (the
    embedded server died), on the event loop ``loop`` names (:func:`loop_factory`).

    Raises:
        ValueError: ``loop`` is ``uvloop`` and uvloop is not installed, or not a loop's name.
    """
    new_loop = loop_factory(loop)
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
                    for sock in sockets:
                        addr, real = sock.getsockname()[:2]
                        shown = f"[{addr}]" if ":" in addr else addr
                        where = " (all interfaces)" if _wildcard(addr) else ""
                        console.print(
                            f"dashboard and gateway: [bold]http://{shown}:{real}[/]{where}"
                        )
                    if config.auth is not None:
                        console.print(
                            f"auth: JWT ({', '.join(config.auth.algorithms)}, "
                            f"iss {config.auth.issuer!r}, aud {config.auth.audience!r})"
                        )
                    elif is_loopback(host):
                        console.print(
                            "auth: off (loopback only; every local user can use the gateway: "
                            "--auth-key-file on a shared machine)"
                        )
                    else:
                        console.print("[bold red]auth: off, on a network address (--insecure)[/]")
                    console.print(f"allowed hosts: {', '.join(config.allowed_hosts)}")
                    console.print(f"event loop: {loop_name(asyncio.get_running_loop())}")
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

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(main())


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
