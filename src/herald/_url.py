"""Connection URLs (sans-I/O): ``redis://``, ``rediss://``, ``unix://``."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from ._errors import ConfigurationError

_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")
_PLANNED = ("redis+sentinel", "redis+cluster", "rediss+sentinel", "rediss+cluster")


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect, parsed from a URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # unix socket
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    tls: bool = False
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify: bool = True

    @property
    def address(self) -> str:
        """Human-readable address, without credentials."""
        if self.path:
            return f"unix://{self.path}"
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_certs)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.certfile:
            ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx


def parse_url(url: str) -> Endpoint:
    """Parse a Redis URL.

    >>> parse_url("redis://alice:s3cret@localhost:6380/2").port
    6380
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"invalid URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme in _PLANNED:
        raise ConfigurationError(f"{scheme}:// is not supported by this version of Herald")
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"invalid URL {url!r}: scheme must be one of redis://, rediss://, unix://"
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if "password" in query:
        password = query["password"]
    db_text = query.get("db") or (parts.path.strip("/") if scheme not in ("unix",) else "0")
    try:
        db = int(db_text or 0)
    except ValueError as exc:
        raise ConfigurationError(f"invalid database number {db_text!r} in {url!r}") from exc
    if scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"invalid URL {url!r}: unix:// needs a socket path")
        return Endpoint(path=parts.path, username=username, password=password, db=db)
    verify = query.get("ssl_cert_reqs", "required").lower() not in ("none", "optional")
    return Endpoint(
        host=parts.hostname or "127.0.0.1",
        port=port or 6379,
        username=username,
        password=password,
        db=db,
        tls=scheme in ("rediss", "valkeys"),
        ca_certs=query.get("ssl_ca_certs"),
        certfile=query.get("ssl_certfile"),
        keyfile=query.get("ssl_keyfile"),
        verify=verify,
    )
