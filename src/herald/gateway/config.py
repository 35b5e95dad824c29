"""The gateway's settings: limits, auth and origins, in one frozen value."""

from __future__ import annotations

from dataclasses import dataclass

from .auth import AuthConfig


@dataclass(frozen=True)
class GatewayConfig:
    """How the gateway treats its clients.

    Attributes:
        auth: JWT settings; ``None`` (the default, for the embedded server on localhost): every
            request is allowed.
        allowed_origins: browser origins allowed to open a WebSocket or use the HTTP API with
            credentials; ``None``: the page's own origin only (``Origin`` equal to the ``Host``
            it was sent to); ``("*",)``: any. Requests without ``Origin`` (not from a browser)
            are not affected.
        max_message_size: largest WebSocket frame or HTTP body accepted, in bytes (a larger
            WebSocket frame closes the connection with 1009, a larger body gets 413).
        max_subscriptions: topics and patterns one connection may subscribe to at once.
        publish_rate: publishes per second one connection may make (token bucket)...
        publish_burst: ...with bursts up to this many.
        max_queue: messages queued for one client before it is disconnected as too slow.
        max_queue_bytes: the same limit in bytes.
        history_limit: the most messages one history read or resume returns.
        ready_timeout: seconds the ``/readyz`` probe message may take for its round trip.
        sse_heartbeat: seconds between SSE comment lines that keep proxies from closing.

    Example::

        config = GatewayConfig(max_subscriptions=10, publish_rate=50)
    """

    auth: AuthConfig | None = None
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
