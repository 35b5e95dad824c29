"""Several links as one: what :class:`~herald._io.cluster.ClusterLink` and
:class:`~herald._io.sharded.ShardedLink` share, and the state of a sharded client's subscriber
connections as one.

:class:`Links` sums up the state of its members (connected, reconnects, errors) and waits for the
one that refused a write. :class:`LinkGroup` adds what a :class:`~herald._io.interface.Connection`
made of several links keeps: its endpoint and options, its loop and background tasks, the
connect and close of every member, the routing of pre-encoded commands by their key and the
per-channel subscriber counts that each member answers for its own channels.

ClusterLink and ShardedLink derive from LinkGroup rather than hold one: what it provides are
members of the Connection protocol, which a held object would need forwarding methods for in
both classes. Neither derives from the other; their routing (slots, shards) stays their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any, TypeVar

from herald._core.resp import Arg
from herald._core.slots import encoded_key
from herald._core.url import Endpoint
from herald._errors import ClientClosed

from .interface import BLOCKED
from .link import Link, Tasks
from .protocol import Reply

A = TypeVar("A")
T = TypeVar("T")


class Links:
    """Several links' state as one. ``members`` is read each time it is asked (a dict's values
    view follows the dict: a cluster's links change with its slot map)."""

    def __init__(self, members: Collection[Link]) -> None:
        self.members = members
        self._blocked: Link | None = None  # the member that refused a write last

    @property
    def reconnects(self) -> int:
        return sum(link.reconnects for link in self.members)

    @property
    def connected(self) -> bool:
        return bool(self.members) and all(link.connected for link in self.members)

    @property
    def errors(self) -> int:
        return sum(link.errors for link in self.members)

    @property
    def last_error(self) -> str | None:
        """The last error reply to a fire-and-forget command on any member's connection."""
        return next((e for link in self.members if (e := link.last_error)), None)

    @property
    def blocked(self) -> bool:
        return any(link.blocked for link in self.members)

    def _note(self, link: Link, status: int) -> int:
        """``status`` of a write to ``link``, remembering ``link`` if it refused the write."""
        if status == BLOCKED:
            self._blocked = link
        return status

    async def wait_writable(self, timeout: float | None) -> None:
        link = self._blocked
        if link is not None:
            await link.wait_writable(timeout)
            return
        for link in list(self.members):
            if link.blocked:
                await link.wait_writable(timeout)

    def flush_now(self) -> None:
        for link in self.members:
            link.flush_now()


class LinkGroup(Links):
    """Several links used as one connection (see the module docstring). A subclass provides
    ``home`` (where commands that name no key go) and ``link_for_key``."""

    def __init__(
        self, endpoint: Endpoint, name: str, options: dict[str, Any], members: Collection[Link]
    ) -> None:
        super().__init__(members)
        self.endpoint = endpoint
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: dict[str, Any] = {}
        probe_interval = options.get("probe_interval", 5.0)
        probe_timeout = options.get("probe_timeout")
        self.probe_interval: float = probe_interval
        self.probe_timeout: float = probe_timeout if probe_timeout is not None else probe_interval
        self._closed = False
        self._tasks = Tasks()

    @property
    def home(self) -> Link:
        raise NotImplementedError

    def link_for_key(self, key: str | bytes) -> Link:
        raise NotImplementedError

    async def _connect_members(self) -> None:
        """Connect every member; if one fails, close them all and raise its error. Every
        connect finishes (or fails) first: one left running after a sibling failed would open a
        socket behind a closed link."""
        links = list(self.members)
        try:
            results = await asyncio.gather(
                *(link.connect() for link in links), return_exceptions=True
            )
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
        except BaseException:
            for link in links:
                await link.close()
            raise

    async def _close_members(self, retired: Collection[Link] = ()) -> bool:
        """Mark closed, cancel the background tasks and close every member and ``retired``
        link; ``False`` if this was closed already."""
        if self._closed:
            return False
        self._closed = True
        await self._tasks.cancel()
        for link in [*self.members, *retired]:
            await link.close()
        return True

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._tasks.spawn(self._loop(), coro)

    def _loop(self) -> asyncio.AbstractEventLoop:
        assert self.loop is not None
        return self.loop

    def _open_loop(self) -> asyncio.AbstractEventLoop:
        """The loop, for a command queued now; :class:`ClientClosed` once closed."""
        loop = self._loop()
        if self._closed:
            raise ClientClosed("connection closed")
        return loop

    def _spawn_future(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Reply]:
        return self._loop().create_task(coro)

    async def _numsub(self, head: tuple[Arg, ...], channels: tuple[Arg, ...]) -> list[Any]:
        """``PUBSUB NUMSUB|SHARDNUMSUB ch...`` (``head``): each channel counted by its member."""
        names = [raw(c) for c in channels]
        groups: dict[Link, list[bytes]] = {}
        for ch in names:
            groups.setdefault(self.link_for_key(ch), []).append(ch)
        replies = await asyncio.gather(*(link.execute(*head, *chs) for link, chs in groups.items()))
        counts: dict[bytes, Any] = {}
        for reply in replies:
            it = iter(reply)
            counts.update(zip(it, it, strict=True))
        return [x for ch in names for x in (ch, counts.get(ch, 0))]

    def _link_of_data(self, data: bytes) -> Link:
        key = encoded_key(data)
        return self.home if key is None else self.link_for_key(key)

    def send_nowait(self, data: bytes, waiters: list[asyncio.Future[Reply] | None]) -> None:
        self._link_of_data(data).send_nowait(data, waiters)


async def call_on_loop(fn: Callable[[A], T], arg: A) -> T:
    """``fn(arg)``, as a coroutine: what a user thread runs on the loop (a route cache is the
    loop's) with ``asyncio.run_coroutine_threadsafe``."""
    return fn(arg)


def raw(arg: Arg) -> bytes:
    """An argument as bytes."""
    return arg if isinstance(arg, bytes) else str(arg).encode()
