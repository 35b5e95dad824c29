"""The gateway's settings: limits, auth and origins, in one frozen value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .auth import AuthConfig
from .guard import LOOPBACK_HOSTS


@dataclass(frozen=True)
class GatewayConfig:
    """How the gateway treats its clients.

    Attributes:
        auth: JWT settings; ``None`` (the default, for the embedded server on localhost): every
            request is allowed.
        allowed_hosts: the names (``Host`` header, port aside) the gateway may be reached by;
            others are refused (421, or 403 for a WebSocket), which stops DNS rebinding.
            Loopback names by default; ``".example.com"`` allows a domain and its subdomains,
            ``("*",)`` any name (behind a proxy that checks it).
        allowed_origins: browser origins allowed to open a WebSocket or use the HTTP API with
            credentials; ``None``: the page's own origin only (``Origin`` equal to the ``Host``
            it was sent to, which must be allowed too); ``("*",)``: any. Requests without
            ``Origin`` (not from a browser) are not affected.
        max_message_size: largest WebSocket frame or HTTP body accepted, in bytes (a larger
            WebSocket frame closes the connection with 1009, a larger body gets 413).
        max_subscriptions: topics and patterns one connection may subscribe to at once.
        publish_rate: publishes per second one WebSocket connection may make, and one token
            (its ``sub``) across its connections and HTTP, and without auth one client
            address over HTTP (token buckets)...
        publish_burst: ...with bursts up to this many.
        max_connections: open connections (HTTP and WebSocket, idle ones included) the
            server accepts; more are closed at once (with ``herald serve`` or
            :func:`herald.gateway.serve.uvicorn_config`).
        header_timeout: seconds a client has to send a request's headers (and, while
            idle between requests, the next one's) before its connection is closed.
        body_timeout: seconds a client has to send a request's body.
        metrics: who may read ``/metrics``: ``"auth"`` (the default) as ``/stats``: with auth
            on, a token with the ``admin`` grant or ``metrics_token``; ``"public"``: anyone
            who can reach the gateway; ``"off"``: nobody (404).
        metrics_token: a static bearer token for Prometheus, accepted on ``/metrics`` only.
        ready_cache: seconds a ``/readyz`` answer is reused (one probe message at most per
            this many seconds, however often it is asked).
        max_queue: messages queued for one client before it is disconnected as too slow.
        max_queue_bytes: the same limit in bytes.
        history_limit: the most messages one history read or resume returns.
        ready_timeout: seconds the ``/readyz`` probe message may take for its round trip.
        sse_heartbeat: seconds between SSE comment lines that keep proxies from closing.
        tracing: OpenTelemetry spans for the client the app makes (``AsyncClient(tracing=
            True)``, global tracer provider): a publish's span is a child of the request's
            W3C ``traceparent`` (``docs/tracing.md``). A client given to ``create_app`` keeps
            its own setting.

    Example::

        config = GatewayConfig(max_subscriptions=10, publish_rate=50)
    """

    auth: AuthConfig | None = None
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    allowed_origins: tuple[str, ...] | None = None
    max_message_size: int = 64 * 1024
    max_subscriptions: int = 100
    publish_rate: float = 1000.0
    publish_burst: int = 1000
    max_queue: int = 10_000
    max_queue_bytes: int = 4 * 1024 * 1024
    history_limit: int = 1000
    ready_timeout: float = 2.0
    sse_heartbeat: float = 15.0
    max_connections: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    metrics: Literal["auth", "public", "off"] = "auth"
    metrics_token: str | None = None
    ready_cache: float = 1.0
    tracing: bool = False

    def __post_init__(self) -> None:
        if self.metrics not in ("auth", "public", "off"):
            raise ValueError("metrics must be 'auth', 'public' or 'off'")
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise ValueError("metrics_token must be at least 16 characters")
