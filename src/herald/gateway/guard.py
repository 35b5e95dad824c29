"""The gateway's outer ASGI layer: the Host allowlist, the request body cap, security headers.

**Host.** A browser page on a name that its attacker maps to 127.0.0.1 (DNS rebinding) reaches
a gateway on localhost with ``Host`` (and ``Origin``) set to that name: comparing ``Origin``
with ``Host`` cannot tell. Only a list of the names the gateway is meant to be reached by can:
loopback names by default, refused with 421 (HTTP) or 403 (WebSocket handshake) otherwise. An
IP address as ``Host`` is always accepted: rebinding needs a name (a page loaded from an
address is sent to that address, not to the gateway), and a gateway on a network is often
reached by its address.
``/healthz`` and ``/readyz`` answer whatever the ``Host``: orchestrators probe them by address
(a pod's IP), and they reveal nothing and change nothing a rebinding page could use.

**Bodies.** No request body may exceed ``max_message_size``: a ``Content-Length`` over it is
refused at once (413), and a body sent without one is counted as it arrives
(:class:`BodyTooLarge`, answered with 413 by the app's error handler).

**Headers.** Every HTTP response says: no framing (``frame-ancestors 'none'``,
``X-Frame-Options: DENY``), no content sniffing, scripts, styles and connections from the
gateway's own origin only, no referrer.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Names that reach a gateway on this machine only.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: Paths served whatever the ``Host`` (health probes).
ANY_HOST_PATHS = frozenset({"/healthz", "/readyz"})

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
        b"object-src 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class BodyTooLarge(ValueError):
    """A request body over the gateway's limit (HTTP 413)."""


def host_name(host: str | None) -> str | None:
    """The name in a ``Host`` header, without port, brackets or a final dot, lowercased.

    >>> host_name("LocalHost.:8080"), host_name("[::1]:80"), host_name("127.0.0.1")
    ('localhost', '::1', '127.0.0.1')
    """
    if not host:
        return None
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        name = host[1:end]
    elif host.count(":") == 1:
        name = host.split(":", 1)[0]
    elif ":" in host:
        name = host  # a bare IPv6 address
    else:
        name = host
    return name.rstrip(".") or None


def host_allowed(host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a request's ``Host`` is an IP address or names one of ``allowed`` (``"*"``: any;
    a leading ``"."``: that domain and its subdomains)."""
    allowed = tuple(allowed)
    if "*" in allowed:
        return True
    name = host_name(host)
    if name is None:
        return False
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return True  # an address, not a name: no DNS to rebind
    for entry in allowed:
        entry = entry.lower().rstrip(".").strip("[]")
        if name == entry or (entry.startswith(".") and (name.endswith(entry) or name == entry[1:])):
            return True
    return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


async def _json(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": code, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: see the module docstring.

    Args:
        app: the app to guard.
        allowed_hosts: names the gateway may be reached by (see :func:`host_allowed`).
        max_body: the largest request body, in bytes.
        on_refused: called for each refused request (the gateway counts them).
    """

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Iterable[str],
        max_body: int,
        on_refused: object = None,
    ) -> None:
        self.app = app
        self.allowed_hosts = tuple(allowed_hosts)
        self.max_body = max_body
        self.on_refused = on_refused if callable(on_refused) else None

    def _refused(self) -> None:
        if self.on_refused is not None:
            self.on_refused()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if scope["path"] not in ANY_HOST_PATHS and not host_allowed(host, self.allowed_hosts):
            self._refused()
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "host not allowed"})
            else:
                await _json(
                    send, 421, "host_not_allowed", f"this gateway is not served as {host!r}"
                )
            return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        limit = self.max_body
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > limit):
            self._refused()
            await _json(send, 413, "too_large", f"body over {limit} bytes")
            return
        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"body over {limit} bytes")
            return message

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, capped_receive, secured_send)
