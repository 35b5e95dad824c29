"""The command tap: ``MONITOR`` on a connection of its own, its lines parsed and filtered to
what concerns Herald (``herald monitor --tap``).

``MONITOR`` turns a connection into a one-way feed of every command the server runs, so it
never shares a client's connections: each node gets one connection opened here, closed when
the tap stops. It costs the server: every command is formatted and written to each monitor
(Redis' documentation: one MONITOR client can cut throughput by more than half).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import hiredis

from herald._core.resp import command
from herald._core.streams import TOPICS_VERSION_KEY as _VERSION_KEY
from herald._core.topics import match
from herald._core.url import Endpoint
from herald._errors import ConnectionFailed, ConnectionLost
from herald._io.protocol import error_from_reply
from herald._io.sentinel import SentinelResolver

#: Commands whose arguments after the name are channels (or patterns).
CHANNEL_COMMANDS = frozenset(
    {
        "PUBLISH",
        "SPUBLISH",
        "SUBSCRIBE",
        "SSUBSCRIBE",
        "PSUBSCRIBE",
        "UNSUBSCRIBE",
        "SUNSUBSCRIBE",
        "PUNSUBSCRIBE",
    }
)
KEY_PREFIX = b"herald:"
TOPICS_VERSION_KEY = _VERSION_KEY.encode()
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("a"): 7, ord("b"): 8}
_ARG = re.compile(rb'"((?:[^"\\]+|\\.)*)"', re.S)
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)", re.S)


@dataclass(frozen=True)
class TapLine:
    """One command the server ran, as ``MONITOR`` reported it.

    Attributes:
        time: when the server ran it (seconds since the epoch).
        db: the database number.
        client: who sent it (``127.0.0.1:50312``, ``unix:...``, ``lua`` for a script's calls).
        args: the command and its arguments.
        node: the node that ran it (``host:port``).
    """

    time: float
    db: int
    client: str
    args: tuple[bytes, ...]
    node: str

    @property
    def command(self) -> str:
        return self.args[0].decode(errors="replace").upper() if self.args else ""

    def topics(self) -> list[str]:
        """The Herald topics the command concerns: its channels, or the topics of its
        ``herald:{topic}...`` keys (empty for other commands)."""
        if self.command in CHANNEL_COMMANDS:
            channels = self.args[1:2] if self.command.endswith("PUBLISH") else self.args[1:]
            return [c.decode(errors="replace") for c in channels]
        found: list[str] = []
        for arg in self.args[1:]:
            topic = key_topic(arg)
            if topic is not None and topic not in found:
                found.append(topic)
        return found

    def concerns_herald(self) -> bool:
        """A Pub/Sub command (every channel is a topic) or one that touches Herald's keys."""
        return self.command in CHANNEL_COMMANDS or any(
            a.startswith(KEY_PREFIX) for a in self.args[1:]
        )


def key_topic(key: bytes) -> str | None:
    """The topic a Herald key belongs to (``herald:{orders}.dead:s`` -> ``orders.dead``;
    ``herald:{herald}:topics``, the registry -> ``""``), or ``None`` for another key."""
    if not key.startswith(KEY_PREFIX + b"{"):
        return None
    end = key.find(b"}")
    if end < 0:
        return None
    root = key[len(KEY_PREFIX) + 1 : end]
    if root == b"herald":
        return ""
    rest = key[end + 1 :]
    colon = rest.find(b":")
    suffix = rest if colon < 0 else rest[:colon]
    return (root + suffix).decode(errors="replace")


def parse_line(line: bytes, node: str) -> TapLine | None:
    """A ``MONITOR`` line: ``1700000000.123456 [0 127.0.0.1:50312] "PUBLISH" "a" "b"``
    (``None`` for anything else, e.g. ``OK``)."""
    head, sep, rest = line.partition(b" [")
    if not sep:
        return None
    who, sep, quoted = rest.partition(b"] ")
    if not sep:
        return None
    db, _, client = who.partition(b" ")
    try:
        return TapLine(
            float(head), int(db), client.decode(errors="replace"), _unquote(quoted), node
        )
    except ValueError:
        return None


def _unquote(text: bytes) -> tuple[bytes, ...]:
    """The arguments of a MONITOR line: each in double quotes, escaped as ``sdscatrepr`` does
    (``\\"``, ``\\\\``, ``\\n``, ``\\xff``...). Regular expressions, not a loop per byte: a
    line may carry a 256 KiB batch frame, and the tap must keep up with the server."""
    args = _ARG.findall(text)
    if _ARG.sub(b"", text).strip():
        raise ValueError("not a sequence of quoted arguments")
    return tuple(_ESCAPE.sub(_unescape, a) if b"\\" in a else a for a in args)


def _unescape(m: re.Match[bytes]) -> bytes:
    code = m[1]
    if len(code) == 3:  # xHH
        return bytes((int(code[1:], 16),))
    return bytes((_ESCAPES.get(code[0], code[0]),))


class Tap:
    """``MONITOR`` on one node: an async iterator of :class:`TapLine`."""

    def __init__(self, endpoint: Endpoint, timeout: float = 5.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.node = f"{endpoint.host}:{endpoint.port}" if not endpoint.path else endpoint.path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = hiredis.Reader()

    async def open(self) -> None:
        ep = self.endpoint
        try:
            async with asyncio.timeout(self.timeout):
                if ep.path:
                    self._reader, self._writer = await asyncio.open_unix_connection(ep.path)
                else:
                    self._reader, self._writer = await asyncio.open_connection(
                        ep.host,
                        ep.port,
                        ssl=ep.ssl_context(),
                        server_hostname=ep.host if ep.tls else None,
                    )
                if ep.password is not None:
                    auth = [ep.username, ep.password] if ep.username else [ep.password]
                    await self._call("AUTH", *auth)
                await self._call("MONITOR")
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            await self.close()
            raise ConnectionFailed(
                f"cannot open a MONITOR connection to {self.node}: {exc}"
            ) from exc
        except BaseException:
            await self.close()
            raise

    async def _call(self, *args: str) -> object:
        assert self._writer is not None
        self._writer.write(command(*args))
        return await self._reply()

    async def _reply(self) -> object:
        assert self._reader is not None
        while True:
            reply = self._parser.gets()
            if reply is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise error_from_reply(reply)
                return reply
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionLost(f"{self.node} closed the MONITOR connection")
            self._parser.feed(data)

    async def lines(self) -> AsyncIterator[TapLine]:
        """Every command the node runs, until the connection closes."""
        while True:
            reply = await self._reply()
            if isinstance(reply, bytes):
                line = parse_line(reply, self.node)
                if line is not None:
                    yield line

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def tap_endpoints(endpoint: Endpoint, cluster_nodes: list[tuple[str, int]]) -> list[Endpoint]:
    """Where to run ``MONITOR``: each primary of a cluster, the primary a Sentinel names, else
    the server of ``endpoint``."""
    if cluster_nodes:
        return [replace(endpoint, host=h, port=p, seeds=()) for h, p in cluster_nodes]
    if endpoint.sentinel is not None:
        host, port = await SentinelResolver(endpoint).discover()
        return [replace(endpoint, host=host, port=port, sentinel=None)]
    return [endpoint]


def wanted(line: TapLine, glob: str | None, *, polls: bool = False) -> bool:
    """Whether the tap shows ``line``: a command that concerns Herald, and with ``glob``, one
    of whose topics (channels, or topics of its keys) matches it. Every client's read of the
    policy version (once a second) is left out unless ``polls``."""
    if not line.concerns_herald():
        return False
    if not polls and line.args == (b"GET", TOPICS_VERSION_KEY):
        return False
    if glob is None:
        return True
    return any(match(glob, t) for t in line.topics())
