"""The gateway's outer layer against a real uvicorn server: Host allowlist (DNS rebinding),
request body cap, security headers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from herald.gateway import GatewayConfig
from herald.gateway.guard import host_allowed, host_name
from herald.gateway.serve import BackgroundGateway

Factory = Callable[..., BackgroundGateway]


@pytest.fixture
def gateway_factory(url: str) -> Iterator[Factory]:
    started: list[BackgroundGateway] = []

    def make(**options: Any) -> BackgroundGateway:
        gw = BackgroundGateway(url, GatewayConfig(**options)).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


def test_host_names() -> None:
    assert host_name("LocalHost.:8080") == "localhost"
    assert host_name("[::1]:8080") == "::1"
    assert host_name("::1") == "::1"
    assert host_name("") is None
    assert host_allowed("127.0.0.1:80", ("127.0.0.1",))
    assert host_allowed("a.example.com", (".example.com",))
    assert not host_allowed("example.com.evil", (".example.com",))
    assert not host_allowed("localhost.evil.example", ("localhost",))
    assert not host_allowed(None, ("localhost",))
    assert host_allowed("anything", ("*",))
    # Addresses are not names: nothing to rebind.
    assert host_allowed("192.168.1.5:8080", ("localhost",))
    assert host_allowed("[fe80::1]:8080", ())
    assert not host_allowed("192.168.1.5.evil.example", ("localhost",))


def test_dns_rebinding_is_refused(gateway_factory: Factory, topic: str) -> None:
    """A page on rebind.example (mapped to 127.0.0.1 by its attacker) sends Host and Origin
    of that name: equal to each other, so the old same-origin check let it publish, read
    history and replay dead letters."""
    gw = gateway_factory()
    evil = {"host": "rebind.example:8080", "origin": "http://rebind.example:8080"}
    r = httpx.post(f"{gw.url}/topics/{topic}", json={"x": 1}, headers=evil)
    assert r.status_code == 421, r.text
    assert r.json()["error"] == "host_not_allowed"
    for path in (f"/topics/{topic}/messages", "/stats", "/topics", "/metrics"):
        assert httpx.get(f"{gw.url}{path}", headers=evil).status_code == 421
    r = httpx.post(f"{gw.url}/topics/{topic}/dead/replay", headers=evil)
    assert r.status_code == 421

    async def ws() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                "ws://rebind.example:8080/ws",
                host="127.0.0.1",
                port=gw.port,
                additional_headers={"origin": evil["origin"]},
            ):
                pass
        assert refused.value.response.status_code == 403

    asyncio.run(ws())
    # Loopback names pass, with their own origin.
    for name in ("127.0.0.1", "localhost"):
        own = {"host": f"{name}:{gw.port}", "origin": f"http://{name}:{gw.port}"}
        assert httpx.post(f"{gw.url}/topics/{topic}", json=1, headers=own).status_code == 200


def test_allowed_hosts_are_configurable(gateway_factory: Factory, topic: str) -> None:
    gw = gateway_factory(allowed_hosts=("herald.example",))
    assert httpx.get(f"{gw.url}/stats", headers={"host": "herald.example"}).status_code == 200
    assert httpx.get(f"{gw.url}/stats", headers={"host": "localhost"}).status_code == 421
    # Health probes come by address (a pod's IP): they answer whatever the Host.
    for path in ("/healthz", "/readyz"):
        assert httpx.get(f"{gw.url}{path}", headers={"host": "10.1.2.3:8080"}).status_code == 200


def test_security_headers(gateway_factory: Factory) -> None:
    gw = gateway_factory()
    for path in ("/", "/healthz", "/static/app.js", "/nope"):
        r = httpx.get(f"{gw.url}{path}")
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"


def _push_body(port: int, path: str, total: int, chunk: int = 64 * 1024) -> tuple[int, bytes]:
    """Send a chunked body of up to ``total`` bytes; return how much went out before the
    gateway answered or closed, and its answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(0.001)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    piece = f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n"
    sent = 0
    answer = b""
    deadline = time.monotonic() + 30
    try:
        while sent < total and time.monotonic() < deadline:
            try:
                answer += sock.recv(4096)
                break
            except TimeoutError:
                pass
            sock.settimeout(1.0)
            sock.sendall(piece)
            sock.settimeout(0.001)
            sent += chunk
        sock.settimeout(5)
        answer += sock.recv(4096)
    except OSError:
        pass
    finally:
        sock.close()
    return sent, answer


def test_request_bodies_are_capped(gateway_factory: Factory, topic: str) -> None:
    gw = gateway_factory()
    limit = gw.config.max_message_size
    # Declared too large: refused before a byte of it is read.
    r = httpx.post(
        f"{gw.url}/topics/{topic}/dead/replay",
        content=b"{" + b" " * (limit + 10) + b"}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413, r.text
    # Streamed without a length (200 MiB offered): cut once past the limit.
    sent, answer = _push_body(gw.port, f"/topics/{topic}/dead/replay", 200 * 2**20)
    assert b" 413 " in answer.split(b"\r\n", 1)[0], answer[:200]
    assert sent < 8 * 2**20, sent  # socket buffers aside, the gateway stopped reading
    sent, answer = _push_body(gw.port, f"/topics/{topic}", 200 * 2**20)
    assert b" 413 " in answer.split(b"\r\n", 1)[0], answer[:200]
