"""The connection layer's interfaces: what the layers above use of a connection, what may be
published through one, and where one connects.

A :class:`Connection` is either a :class:`~herald._io.link.Link` (one server) or a
:class:`~herald._io.cluster.ClusterLink` (every primary of a cluster, routing each command and
publish to its slot's node); both implement it and neither derives from the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Protocol

from herald._core.resp import Arg
from herald._core.url import Endpoint

from .protocol import Reply

if TYPE_CHECKING:
    from .link import Link


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

    async def resolve(self, link: Link) -> Endpoint: ...

    async def release(self, link: Link) -> None: ...


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

    def link_for_key(self, key: str | bytes) -> Link:
        """The connection to the node serving ``key`` (a topic: its channel and keys)."""
        ...

    def set_unsharded(self, channels: AbstractSet[bytes], sharded: bool = True) -> None:
        """Which channels plain SUBSCRIBE clients read (a cluster PUBLISHes them)."""
        ...
