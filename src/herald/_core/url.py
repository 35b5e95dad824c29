"""Connection URLs (sans-I/O): ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
``redis+sentinel://``, ``redis+shards://`` (and ``shards=``: several servers by name)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from herald._core.options import OPTIONS, check_option
from herald._errors import ConfigurationError

_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")
_CLUSTER = ("redis+cluster", "rediss+cluster", "valkey+cluster", "valkeys+cluster")
_SENTINEL = ("redis+sentinel", "rediss+sentinel", "valkey+sentinel", "valkeys+sentinel")
_SHARDS = ("redis+shards", "rediss+shards", "valkey+shards", "valkeys+shards")
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelSpec:
    """``redis+sentinel://``: the sentinels to ask and the name of the primary they watch.

    ``username``/``password`` are the sentinels' own (``sentinel_username=``,
    ``sentinel_password=`` in the URL); the data nodes' credentials are the Endpoint's.
    """

    hosts: tuple[tuple[str, int], ...]
    master: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)


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
    check_hostname: bool = True
    # redis+cluster://h:p,h:p: the nodes to discover the cluster from (host, port is the first)
    seeds: tuple[tuple[str, int], ...] = ()
    # redis+sentinel://h:p,h:p/name: where to find the primary (host, port is resolved then)
    sentinel: SentinelSpec | None = None
    # shards= / redis+shards://: independent servers by name, topics placed by _shards
    shards: tuple[tuple[str, Endpoint], ...] = ()
    # The options (names of _core.options.OPTIONS) the URL gave, whatever their value.
    given: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @property
    def address(self) -> str:
        """Human-readable address, without credentials."""
        if self.shards:
            return "shards: " + ", ".join(f"{n}={ep.address}" for n, ep in self.shards)
        if self.path:
            return f"unix://{self.path}"
        if self.sentinel is not None:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel.hosts)
            scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
            return f"{scheme}://{hosts}/{self.sentinel.master}/{self.db}"
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client's TLS context (``None`` without TLS): the CA (``ssl_ca_certs``, else the
        system's), the client certificate for servers that require one (``ssl_certfile``,
        ``ssl_keyfile``), verification (``ssl_cert_reqs``, ``ssl_check_hostname``).

        The files are read on each call, that is on each (re)connect: a renewed certificate
        is picked up without a restart.

        Raises:
            ConfigurationError: a file cannot be read or holds no usable certificate or key.
        """
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load ssl_ca_certs={self.ca_certs}: {exc}") from exc
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif not self.check_hostname:
            ctx.check_hostname = False
        if self.certfile:
            try:
                ctx.load_cert_chain(self.certfile, self.keyfile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(
                    f"cannot load the client certificate ssl_certfile={self.certfile} "
                    f"ssl_keyfile={self.keyfile}: {exc}"
                ) from exc
        elif self.keyfile:
            raise ConfigurationError("ssl_keyfile= needs ssl_certfile= (the client certificate)")
        return ctx


def tls_refused(endpoint: Endpoint, address: str, detail: object) -> str:
    """The error message for a TLS server that closed the connection right after the
    handshake: with TLS 1.3 that is how a server refuses a client certificate (or its absence).

    >>> tls_refused(Endpoint(tls=True), "rediss://h:1/0", "reset")  # doctest: +ELLIPSIS
    'TLS: rediss://h:1/0 closed the connection after the handshake (reset): ... ssl_keyfile='
    """
    if endpoint.certfile:
        hint = (
            f"the server may not trust the client certificate {endpoint.certfile} "
            "(is it signed by a CA in the server's tls-ca-cert-file?)"
        )
    else:
        hint = "the server may require a client certificate: set ssl_certfile= and ssl_keyfile="
    return f"TLS: {address} closed the connection after the handshake ({detail}): {hint}"


def parse_url(url: str) -> Endpoint:
    """Parse a Redis URL.

    Query options: ``db=``, ``password=``; with TLS (``rediss``): ``ssl_ca_certs=`` (CA file;
    the system's CAs by default), ``ssl_certfile=`` and ``ssl_keyfile=`` (client certificate,
    for servers with ``tls-auth-clients yes``), ``ssl_cert_reqs=none`` (no verification at
    all), ``ssl_check_hostname=false`` (verify the chain, not the name). The same options hold
    for ``rediss+cluster://`` and ``rediss+sentinel://``, on every connection.

    >>> parse_url("redis://alice:s3cret@localhost:6380/2").port
    6380
    >>> ep = parse_url("rediss://h?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/c.key")
    >>> ep.tls, ep.ca_certs, ep.certfile, ep.keyfile, ep.verify, ep.check_hostname
    (True, '/ca.pem', '/c.pem', '/c.key', True, True)
    """
    scheme, _, _ = url.partition("://")
    if scheme.lower() in _CLUSTER:
        return _parse_cluster(url, scheme)
    if scheme.lower() in _SENTINEL:
        return _parse_sentinel(url, scheme)
    if scheme.lower() in _SHARDS:
        return _parse_shards(url, scheme)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"invalid URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if "," in parts.netloc:
        raise ConfigurationError(
            f"invalid URL {url!r}: several hosts need redis+cluster:// (a cluster), "
            "redis+sentinel:// (sentinels) or redis+shards:// (topics spread over servers)"
        )
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"invalid URL {url!r}: scheme must be one of redis://, rediss://, unix://"
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if "password" in query:
        password = query["password"]
    given = {name for name in OPTIONS if name in query}
    given |= {n for n, v in (("username", username), ("password", password)) if v is not None}
    if query.get("db") or (scheme != "unix" and parts.path.strip("/")):
        given.add("db")
    db_text = query.get("db") or (parts.path.strip("/") if scheme not in ("unix",) else "0")
    try:
        db = int(db_text or 0)
    except ValueError as exc:
        raise ConfigurationError(f"invalid database number {db_text!r} in {url!r}") from exc
    if scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"invalid URL {url!r}: unix:// needs a socket path")
        return Endpoint(
            path=parts.path, username=username, password=password, db=db, given=frozenset(given)
        )
    verify = check_option("ssl_cert_reqs", query.get("ssl_cert_reqs", "required"), url)
    check_hostname = check_option("ssl_check_hostname", query.get("ssl_check_hostname", "1"), url)
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
        check_hostname=check_hostname,
        given=frozenset(given),
    )


def _parse_cluster(url: str, scheme: str) -> Endpoint:
    """``redis+cluster://[user:pass@]h:p,h:p[/?query]``: the nodes to discover the cluster from;
    options as for ``redis://`` (a cluster has database 0 only).

    >>> parse_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001").seeds
    (('10.0.0.1', 7000), ('10.0.0.2', 7001))
    """
    rest = url[len(scheme) + 3 :]
    # The hosts end at the first "/" or "?" (a query's file paths hold slashes).
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:].removeprefix("/")
    userinfo, at, hosts = netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        if not item:
            continue
        host, colon, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
        if not colon:
            host, port = item, "6379"
        try:
            seeds.append((host.strip("[]") or "127.0.0.1", int(port)))
        except ValueError as exc:
            raise ConfigurationError(f"invalid port {port!r} in {url!r}") from exc
    if not seeds:
        raise ConfigurationError(f"invalid URL {url!r}: name at least one cluster node")
    tls = scheme.lower().startswith(("rediss", "valkeys"))
    first = f"{'rediss' if tls else 'redis'}://{userinfo}{at}{seeds[0][0]}:{seeds[0][1]}/{tail}"
    ep = parse_url(first)
    if ep.db:
        raise ConfigurationError("a cluster has database 0 only")
    return replace(ep, seeds=tuple(seeds))


def parse_hosts(hosts: str, url: str, default_port: int = 6379) -> tuple[tuple[str, int], ...]:
    """``h:p,h:p,[::1]:p`` as ``((host, port), ...)``; a host without a port gets
    ``default_port``.

    >>> parse_hosts("a:1,b,[::1]:3", "redis+sentinel://...", 26379)
    (('a', 1), ('b', 26379), ('::1', 3))
    """
    out: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, colon, port_text = item.rpartition(":")
            if not colon:
                host, port_text = item, ""
        try:
            port = int(port_text) if port_text else default_port
        except ValueError as exc:
            raise ConfigurationError(f"invalid port {port_text!r} in {url!r}") from exc
        if not 0 < port < 65536:
            raise ConfigurationError(f"invalid port {port} in {url!r}")
        out.append((host or "127.0.0.1", port))
    if not out:
        raise ConfigurationError(f"invalid URL {url!r}: name at least one host")
    return tuple(out)


def _parse_sentinel(url: str, scheme: str) -> Endpoint:
    """``redis+sentinel://[user:pass@]h:p,h:p/<primary name>[/db][?query]``.

    ``user:pass`` are the data nodes' credentials; ``sentinel_username=`` and
    ``sentinel_password=`` those of the sentinels (none by default). ``rediss+sentinel://``
    uses TLS to the sentinels and to the data nodes, with the ``ssl_*`` options of
    ``rediss://``. The default sentinel port is 26379.

    >>> ep = parse_url("redis+sentinel://:pw@s1:26379,s2/herald/2?sentinel_password=x")
    >>> ep.sentinel.hosts, ep.sentinel.master, ep.db, ep.password, ep.sentinel.password
    ((('s1', 26379), ('s2', 26379)), 'herald', 2, 'pw', 'x')
    """
    rest = url[len(scheme) + 3 :]
    rest, _, query_text = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts_text = netloc.rpartition("@")
    hosts = parse_hosts(hosts_text, url, SENTINEL_PORT)
    name, _, db_text = path.strip("/").partition("/")
    name = unquote(name)
    query = {k: v[-1] for k, v in parse_qs(query_text).items()}
    if not name:
        name = query.get("service_name") or query.get("master_name") or ""
    if not name:
        raise ConfigurationError(
            f"invalid URL {url!r}: name the primary, e.g. redis+sentinel://host:26379/mymaster"
        )
    tls = scheme.lower().startswith(("rediss", "valkeys"))
    h0, p0 = hosts[0]
    host0 = f"[{h0}]" if ":" in h0 else h0
    db_part = f"/{db_text}" if db_text else ""
    data_url = f"{'rediss' if tls else 'redis'}://{userinfo}{at}{host0}:{p0}{db_part}"
    ep = parse_url(data_url + (f"?{query_text}" if query_text else ""))
    spec = SentinelSpec(
        hosts=hosts,
        master=name,
        username=query.get("sentinel_username"),
        password=query.get("sentinel_password"),
    )
    return replace(ep, sentinel=spec)


def _parse_shards(url: str, scheme: str) -> Endpoint:
    """``redis+shards://[user:pass@]h:p,h:p[/db][?query]``: standalone servers with the same
    credentials and options, each named ``host:port``; topics are placed over them.

    >>> [name for name, _ in parse_url("redis+shards://10.0.0.1:6379,10.0.0.2").shards]
    ['10.0.0.1:6379', '10.0.0.2:6379']
    """
    rest = url[len(scheme) + 3 :]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, at, hosts_text = netloc.rpartition("@")
    base = "rediss" if scheme.lower().startswith(("rediss", "valkeys")) else "redis"
    urls = []
    for host, port in parse_hosts(hosts_text, url):
        shown = f"[{host}]" if ":" in host else host
        urls.append(f"{base}://{userinfo}{at}{shown}:{port}{tail}")
    return shards_endpoint(urls)


def shard_name(endpoint: Endpoint) -> str:
    """A shard's default name: ``host:port``, the socket path, or the Sentinel primary's name.

    >>> shard_name(parse_url("redis://h:7000")), shard_name(parse_url("redis+sentinel://s/m"))
    ('h:7000', 'm')
    """
    if endpoint.sentinel is not None:
        return endpoint.sentinel.master
    if endpoint.path:
        return endpoint.path
    return f"{endpoint.host}:{endpoint.port}"


def shards_endpoint(shards: object) -> Endpoint:
    """The endpoint of a sharded client: ``shards`` is a list of URLs (each named by
    :func:`shard_name`) or a mapping of name -> URL; each URL is ``redis://``, ``rediss://``,
    ``unix://`` or ``redis+sentinel://`` (not a cluster: a cluster shards by itself).

    >>> ep = shards_endpoint({"a": "redis://h1", "b": "redis+sentinel://s1,s2/m"})
    >>> [(n, e.address) for n, e in ep.shards]
    [('a', 'redis://h1:6379/0'), ('b', 'redis+sentinel://s1:26379,s2:26379/m/0')]
    """
    if isinstance(shards, str):
        raise ConfigurationError(
            "shards= takes a list of URLs or a mapping of name -> URL, not one string "
            "(for one string of hosts: redis+shards://h1:6379,h2:6379)"
        )
    if isinstance(shards, dict):
        items = [(str(name), str(u)) for name, u in shards.items()]
    elif isinstance(shards, list | tuple):
        items = [("", str(u)) for u in shards]
    else:
        raise ConfigurationError(f"shards= takes a list or a mapping of URLs, not {shards!r}")
    if not items:
        raise ConfigurationError("shards= names no server")
    out: list[tuple[str, Endpoint]] = []
    for name, shard_url in items:
        scheme = shard_url.partition("://")[0].lower()
        if scheme in _CLUSTER or scheme in _SHARDS:
            raise ConfigurationError(
                f"shard {shard_url!r}: a shard is one server or a Sentinel group, not a "
                "cluster or another set of shards"
            )
        ep = parse_url(shard_url)
        name = name or shard_name(ep)
        if not name or any(c in name for c in "\r\n"):
            raise ConfigurationError(f"invalid shard name {name!r}")
        if any(name == n for n, _ in out):
            raise ConfigurationError(
                f"two shards are named {name!r}: give each a name (shards={{name: url}})"
            )
        out.append((name, ep))
    first = out[0][1]
    return replace(first, sentinel=None, shards=tuple(out))


def with_options(ep: Endpoint, options: Mapping[str, Any]) -> Endpoint:
    """``ep`` with the connection options a client was given as keyword arguments (those not
    ``None``; names of ``_core.options.OPTIONS``).

    >>> ep = with_options(parse_url("rediss://h/2"), {"ssl_ca_certs": "/ca.pem", "db": 2})
    >>> ep.ca_certs, ep.db, ep.tls
    ('/ca.pem', 2, True)

    Raises:
        ConfigurationError: a bad value; an option the URL gives with another value; a TLS
            option without TLS (``redis://``), a sentinel option without Sentinel, a database
            other than 0 on a cluster.
    """
    given = set(ep.given)
    for name, value in options.items():
        if value is None:
            continue
        option = OPTIONS[name]
        value = check_option(name, value)
        if option.tls and not ep.tls:
            raise ConfigurationError(
                f"{name}= applies to TLS connections: use a rediss:// URL, not {ep.address}"
            )
        if option.sentinel and ep.sentinel is None:
            raise ConfigurationError(f"{name}= applies to redis+sentinel:// URLs only")
        if name == "db" and value and ep.seeds:
            raise ConfigurationError("a cluster has database 0 only")
        target: Any = ep.sentinel if option.sentinel else ep
        if name in given and getattr(target, option.field) != value:
            # The values are not shown: one may be a password.
            raise ConfigurationError(
                f"{name} is given in the URL and as a keyword argument, with different "
                "values: give it in one place"
            )
        if option.sentinel:
            ep = replace(ep, sentinel=replace(target, **{option.field: value}))
        else:
            ep = replace(ep, **{option.field: value})
        given.add(name)
    return replace(ep, given=frozenset(given))
