"""The gateway's Starlette app: ``create_app(client_or_url, config)``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from herald import AsyncClient, HeraldError

from . import http, sse
from .auth import AuthError
from .config import GatewayConfig
from .guard import Guard
from .metrics import metrics, registry_for
from .openapi import document
from .publishing import Refused
from .state import Gateway
from .ws import websocket_endpoint

STATIC = Path(__file__).parent / "static"


async def _index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


async def _openapi(request: Request) -> Response:
    return JSONResponse(document())


async def _on_error(request: Request, exc: Exception) -> Response:
    return http.handle_errors(exc)


# Errors with a meaning for the client; anything else is a 500 (and logged by the server).
_HANDLED = {
    HeraldError: _on_error,
    AuthError: _on_error,
    ValueError: _on_error,
    Refused: _on_error,
}


def create_app(
    client: AsyncClient | str | None = None, config: GatewayConfig | None = None
) -> Starlette:
    """The gateway as an ASGI app: HTTP API, WebSocket, SSE, metrics and the dashboard.

    Args:
        client: the :class:`herald.AsyncClient` to use (the caller closes it), or a URL for a
            client owned by the app (``None``: ``$HERALD_URL`` or ``herald serve``'s server).
        config: limits, auth and origins (:class:`GatewayConfig`).

    Example::

        import uvicorn
        from herald.gateway import GatewayConfig, create_app

        uvicorn.run(create_app("redis://localhost:6379", GatewayConfig()), port=8080)
    """
    config = config or GatewayConfig()
    owns = not isinstance(client, AsyncClient)
    hub = (
        client
        if isinstance(client, AsyncClient)
        else AsyncClient(
            client,
            start_embedded=False,
            max_message_size=config.max_message_size + 4096,
            tracing=config.tracing,
        )
    )
    gw = Gateway(hub, config, owns_hub=owns)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    routes = [
        Route("/", _index),
        Route("/openapi.json", _openapi),
        Route("/healthz", http.healthz),
        Route("/readyz", http.readyz),
        Route("/metrics", metrics),
        Route("/stats", http.stats),
        Route("/topics", http.list_topics),
        Route("/topics/{topic}", http.publish, methods=["POST"]),
        Route("/topics/{topic}", http.topic_detail, methods=["GET"]),
        Route("/topics/{topic}/messages", http.messages),
        Route("/topics/{topic}/events", sse.events),
        Route("/topics/{topic}/dead", http.dead_letters),
        Route("/topics/{topic}/dead/replay", http.replay_dead, methods=["POST"]),
        WebSocketRoute("/ws", websocket_endpoint),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    def refused() -> None:
        gw.stats.refused += 1

    guard = Middleware(
        Guard,
        allowed_hosts=config.allowed_hosts,
        max_body=config.max_message_size,
        on_refused=refused,
    )
    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers=_HANDLED, middleware=[guard]
    )
    app.state.gateway = gw
    app.state.metrics_registry, app.state.metrics_collector = registry_for(gw)
    return app
