"""The connection layer's interfaces: what the layers above use of a connection, what may be
published through one, and where one connects.

A :class:`Connection` is a :class:`~herald._io.link.Link` (one server), a
:class:`~herald._io.cluster.ClusterLink` (every primary of a cluster, routing each command and
publish to its slot's node) or a :class:`~herald._io.sharded.ShardedLink` (independent servers,
routing each command and publish to its topic's shard); each implements it and none derives from
another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

from herald._core.resp import Arg
from herald._core.url import Endpoint

from .protocol import Reply, RespProtocol


class BatchCommand(Protocol):
    """A publish that is not a PUBLISH (a recoverable topic's script): the command carrying a
    group of envelopes queued in one event-loop iteration. Identity is the batching key."""

    def build(self, frames: list[bytes]) -> bytes: ...


Prefix = bytes | BatchCommand


class Resolver(Protocol):
    """Where a Link connects, decided again on every (re)connect (Sentinel: the current primary).

    ``resolve`` returns the endpoint to open (credentials, db and TLS as the Link's own) or
    raises :class:`ConnectionFailed`; ``release`` is called once when the Link closes.
    """

    async def resolve(self, link: NodeLink) -> Endpoint: ...

    async def release(self, link: NodeLink) -> None: ...


# try_publish results
QUEUED = 0
FLUSHED = 1
BLOCKED = 2


class Connection(Protocol):
    """What the layers above use of a connection: a :class:`Link` to one server, or a
    :class:`~herald._io.cluster.ClusterLink` to every primary of a cluster (which routes each
    command and publish to its slot's node). Both implement it; neither derives from the other.
    """

    endpoint: Endpoint
    name: str
    loop: asyncio.AbstractEventLoop | None
    server: dict[str, Any]
    probe_interval: float
    probe_timeout: float

    @property
    def reconnects(self) -> int: ...

    @property
    def connected(self) -> bool: ...

    @property
    def errors(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def blocked(self) -> bool: ...

    async def connect(self) -> None: ...

    async def wait_connected(self, timeout: float | None) -> None: ...

    async def close(self) -> None: ...

    def execute(self, *args: Arg) -> asyncio.Future[Reply]: ...

    def try_publish(self, prefix: Prefix, frames: list[bytes], batchable: bool) -> int: ...

    def publish_nowait(self, prefix: bytes, frame: bytes, batchable: bool) -> bool: ...

    def publish_threadsafe(
        self, prefix: bytes, frame: bytes, batchable: bool, timeout: float | None
    ) -> None: ...

    def try_send(self, data: bytes, waiters: list[asyncio.Future[Reply] | None]) -> int: ...

    def send_nowait(self, data: bytes, waiters: list[asyncio.Future[Reply] | None]) -> None: ...

    async def wait_writable(self, timeout: float | None) -> None: ...

    def flush_now(self) -> None: ...

    def link_for_key(self, key: str | bytes) -> NodeLink:
        """The connection to the node serving ``key`` (a topic: its channel and keys)."""
        ...

    def for_topic(self, topic: str) -> Connection:
        """What to wait for before a command about ``topic`` that must not be queued during
        an outage: a sharded client's shard of the topic, this connection otherwise."""
        ...

    def set_unsharded(self, channels: AbstractSet[bytes], sharded: bool = True) -> None:
        """Which channels plain SUBSCRIBE clients read (a cluster PUBLISHes them)."""
        ...


class NodeLink(Connection, Protocol):
    """The connection to one node (a :class:`~herald._io.link.Link`): what the layers above use
    of the one :meth:`Connection.link_for_key` returns, and a :class:`Resolver` of the link it
    resolves for. A Protocol, so that this module does not import the Link that imports it."""

    _proto: RespProtocol | None  # a consumer aborts a silent read's connection

    @property
    def connection(self) -> object | None: ...

    def drop(self, reason: str) -> None: ...
