"""The gateway's Starlette app: ``create_app(client_or_url, config)``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

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
    # The server as the client reached it (its Host is one the gateway is served as).
    return JSONResponse(document(str(request.base_url).rstrip("/") or None))


async def _on_error(request: Request, exc: Exception) -> Response:
    return http.handle_errors(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    # Unknown routes and methods too answer JSON, as every other error does.
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    message = {
        404: f"no such route: {request.method} {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    response = http.error(exc.status_code, code, message)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value  # Allow, on a 405
    return response


class _TopicConvertor(Convertor[str]):
    """A topic as one path segment, percent-encoded (see :class:`TopicPaths`)."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return quote(value, safe="")


register_url_convertor("herald_topic", _TopicConvertor())


class TopicPaths:
    """``/topics/{topic}/...`` routed by the raw path, so that a topic holding ``/`` (legal in
    Herald) is reached percent-encoded: ``POST /topics/news%2Fsport`` publishes to
    ``news/sport``. The server decodes ``%2F`` into the path, where it would split the topic;
    the topic segment is re-encoded for the router here and decoded by its convertor."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not scope.get("root_path"):
            raw = scope.get("raw_path")
            if isinstance(raw, bytes):
                # The path as sent (some servers append the query to raw_path).
                path, encoded = raw.split(b"?", 1)[0].decode("latin-1"), True
            else:  # no raw path: the decoded one, where a %2F is already a /
                path, encoded = scope["path"], False
            if path.startswith("/topics/"):
                segment, slash, tail = path[len("/topics/") :].partition("/")
                if segment:
                    topic = unquote(segment) if encoded else segment
                    tail = unquote(tail) if encoded else tail
                    scope = dict(scope, path=f"/topics/{quote(topic, safe='')}{slash}{tail}")
        await self.app(scope, receive, send)


# Errors with a meaning for the client; anything else is a 500 (and logged by the server).
_HANDLED = {
    HTTPException: _on_http_error,
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
        Route("/topics/{topic:herald_topic}", http.publish, methods=["POST"]),
        Route("/topics/{topic:herald_topic}", http.topic_detail, methods=["GET"]),
        Route("/topics/{topic:herald_topic}/messages", http.messages),
        Route("/topics/{topic:herald_topic}/events", sse.events),
        Route("/topics/{topic:herald_topic}/dead", http.dead_letters),
        Route("/topics/{topic:herald_topic}/dead/replay", http.replay_dead, methods=["POST"]),
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
        routes=routes,
        lifespan=lifespan,
        exception_handlers=_HANDLED,
        middleware=[guard, Middleware(TopicPaths)],
    )
    app.state.gateway = gw
    app.state.metrics_registry, app.state.metrics_collector = registry_for(gw)
    return app
