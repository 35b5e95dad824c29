"""Herald's gateway: HTTP, WebSocket and SSE access to topics, with a live dashboard.

Run it with ``herald serve`` (embedded Valkey and the gateway on http://127.0.0.1:8080), or
mount the ASGI app yourself::

    import uvicorn
    from herald.gateway import AuthConfig, GatewayConfig, create_app

    config = GatewayConfig(auth=AuthConfig(key=secret, audience="herald", issuer="me"))
    uvicorn.run(create_app("redis://localhost:6379", config), port=8080)

See ``docs/gateway.md`` for the protocol, auth and limits.
"""

from .app import create_app
from .auth import AuthConfig, AuthError, Principal, authenticate
from .config import GatewayConfig

__all__ = ["AuthConfig", "AuthError", "GatewayConfig", "Principal", "authenticate", "create_app"]
