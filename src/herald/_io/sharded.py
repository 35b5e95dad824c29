"""Several independent servers behind one :class:`~herald._io.interface.Connection`.

:class:`ShardedLink` keeps one :class:`Link` per shard (a standalone server or a Sentinel
group) and sends every command to the shard that owns its topic (:mod:`herald._core.shards`):
a live publish by its channel, a durable or recoverable topic's commands and scripts by the
hash tag of its keys (``herald:{orders}:s``). The client and the modules under it (durable
publish, consumer reads and acks, requests) use it exactly as a single-server link, as they use
a :class:`~herald._io.cluster.ClusterLink`: the fast paths (auto-pipelining, batch frames) work
per shard, and a shard that is down holds up only the commands routed to it.

Herald's registry of topic policies (``herald:{herald}:topics`` and its version key) exists on
every shard and holds the policies of that shard's topics: a declare, a restore and a delete go
to the topic's shard; reads of the whole registry ask every shard and merge the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from collections.abc import Set as AbstractSet
from typing import Any

from herald._core.resp import Arg
from herald._core.shards import (
    LIST_LEASE,
    LISTS_KEY,
    key_placement,
    list_field,
    other_lists,
    owner,
)
from herald._core.slots import command_key, command_keys, encoded_key
from herald._core.streams import TOPICS_KEY, TOPICS_VERSION_KEY
from herald._core.url import Endpoint
from herald._errors import ClientClosed, CrossSlot, HeraldError, Timeout
from herald._io.interface import BLOCKED, Prefix
from herald._io.link import Link, Tasks
from herald._io.protocol import Reply
from herald._io.sentinel import SentinelResolver

log = logging.getLogger("herald")

_TOPICS = TOPICS_KEY.encode()
_VERSION = TOPICS_VERSION_KEY.encode()
_EVAL = (b"EVAL", b"EVALSHA")
_ROUTES_MAX = 10_000


def shard_resolvers(endpoint: Endpoint) -> dict[str, SentinelResolver]:
    """One Sentinel resolver per Sentinel-managed shard, shared by the client's connections."""
    return {n: SentinelResolver(ep) for n, ep in endpoint.shards if ep.sentinel is not None}


def shard_for_topic(
    endpoint: Endpoint, options: dict[str, Any], topic: str
) -> tuple[Endpoint, dict[str, Any]]:
    """The endpoint and link options of ``topic``'s shard (``endpoint`` itself, unsharded)."""
    if not endpoint.shards:
        return endpoint, options
    names = tuple(n for n, _ in endpoint.shards)
    name, shard = endpoint.shards[owner(names, key_placement(topic.encode()))]
    out = {k: v for k, v in options.items() if k != "resolvers"}
    resolver = (options.get("resolvers") or {}).get(name)
    if resolver is not None:
        out["resolver"] = resolver
    return shard, out


class ShardedLink:
    """Every shard of a sharded client, used as one link (see the module docstring).

    Example::

        link = ShardedLink(shards_endpoint(["redis://h1", "redis://h2"]), name="herald")
        await link.connect()
        await link.execute("PUBLISH", "orders", b"...")  # sent to the shard of "orders"
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        name: str,
        resolvers: dict[str, SentinelResolver] | None = None,
        **options: Any,
    ) -> None:
        options.pop("resolver", None)
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
        self.other_lists: set[tuple[str, ...]] = set()  # lists of shards other clients use
        resolvers = resolvers if resolvers is not None else shard_resolvers(endpoint)
        self.names = tuple(n for n, _ in endpoint.shards)
        self.links = [
            Link(ep, name=f"{name}-{i}", resolver=resolvers.get(n), **options)
            for i, (n, ep) in enumerate(endpoint.shards)
        ]
        self._routes: dict[Prefix, Link] = {}
        self._by_key: dict[bytes, Link] = {}
        self._blocked: Link | None = None
        self._registry_cache: dict[tuple[int, bytes], Reply] = {}

    # -- state -------------------------------------------------------------------------------

    @property
    def reconnects(self) -> int:
        return sum(link.reconnects for link in self.links)

    @property
    def connected(self) -> bool:
        return all(link.connected for link in self.links)

    @property
    def errors(self) -> int:
        return sum(link.errors for link in self.links)

    @property
    def last_error(self) -> str | None:
        return next((link.last_error for link in self.links if link.last_error), None)

    @property
    def home(self) -> Link:
        """The link of the first shard: commands that name no topic go there."""
        return self.links[0]

    def link_for_key(self, key: str | bytes) -> Link:
        """The link of the shard that owns ``key`` (a channel, or a key tagged ``{topic}``)."""
        raw = key if isinstance(key, bytes) else key.encode()
        link = self._by_key.get(raw)
        if link is None:
            link = self.links[owner(self.names, key_placement(raw))]
            if len(self._by_key) > _ROUTES_MAX:
                self._by_key.clear()
            self._by_key[raw] = link
        return link

    def for_topic(self, topic: str) -> Link:
        """The link of ``topic``'s shard: a shard that is down holds up only its topics."""
        return self.link_for_key(topic)

    def set_unsharded(self, channels: AbstractSet[bytes], sharded: bool = True) -> None:
        """Nothing to do: each shard is one server, where ``PUBLISH`` is the only publish."""

    async def connect(self) -> None:
        """Connect to every shard; fail (naming it) if one cannot be reached."""
        self.loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(link.connect() for link in self.links), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            for link in self.links:
                await link.close()
            raise failed[0]
        self.server = self.home.server
        await self._check_lists()
        self._tasks.spawn(self.loop, self._renew_lists())

    async def _check_lists(self) -> None:
        """Renew this client's lease on every shard (naming its list of shards) and warn, once
        per list, about a client that places topics with another list."""
        own = list_field(self.names)
        until = int((time.time() + LIST_LEASE) * 1000)
        for link in self.links:
            if not link.connected:
                continue
            try:
                async with asyncio.timeout(2.0):
                    await link.execute("HSET", LISTS_KEY, own, until)
                    reply = await link.execute("HGETALL", LISTS_KEY)
            except (HeraldError, TimeoutError):
                continue  # an ACL without the key, a shard going down: not checked now
            for names in other_lists(reply, own, time.time() * 1000):
                if names not in self.other_lists:
                    self.other_lists.add(names)
                    log.warning(
                        "another client uses other shards (%s) than this one (%s), seen on "
                        "%s: the two place some topics on different servers, and messages of "
                        "those topics between them are lost; give every client the same list",
                        ", ".join(names),
                        ", ".join(self.names),
                        link.endpoint.address,
                    )

    async def _renew_lists(self) -> None:
        while not self._closed:
            await asyncio.sleep(LIST_LEASE / 3)
            await self._check_lists()

    async def wait_connected(self, timeout: float | None) -> None:
        if self._closed:
            raise ClientClosed("connection closed")
        try:
            async with asyncio.timeout(timeout):
                for link in self.links:
                    await link.wait_connected(None)
        except TimeoutError:
            down = ", ".join(link.endpoint.address for link in self.links if not link.connected)
            raise Timeout(
                f"not connected to every shard within {timeout}s: {down}", timeout
            ) from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._tasks.cancel()
        for link in self.links:
            await link.close()

    # -- routing -----------------------------------------------------------------------------

    def _route(self, pfx: Prefix) -> Link:
        link = self._routes.get(pfx)
        if link is None:
            if isinstance(pfx, bytes):
                # b"*3\r\n$7\r\nPUBLISH\r\n$<n>\r\n<channel>\r\n$"
                name_end = pfx.index(b"\r\n", pfx.index(b"\r\n", 4) + 2)
                size_end = pfx.index(b"\r\n", name_end + 2)
                channel = pfx[size_end + 2 : size_end + 2 + int(pfx[name_end + 3 : size_end])]
                link = self.link_for_key(channel)
            else:
                topic = getattr(pfx, "topic", None)
                link = self.link_for_key(topic) if isinstance(topic, str) else self.home
            if len(self._routes) > _ROUTES_MAX:
                self._routes.clear()
            self._routes[pfx] = link
        return link

    def _link_of_args(self, args: tuple[Arg, ...]) -> Link:
        name = _raw(args[0]).upper()
        if name == b"PUBLISH" and len(args) > 1:
            return self.link_for_key(_raw(args[1]))
        if name in _EVAL and len(args) > 4 and _raw(args[3]) == _TOPICS:
            return self.link_for_key(_raw(args[3 + int(args[2])]))  # declare/restore: ARGV[1]
        if len(args) > 2 and _raw(args[1]) == _TOPICS and name in (b"HDEL", b"HGET", b"HSET"):
            return self.link_for_key(_raw(args[2]))  # a topic's policy is where the topic is
        key = command_key(args)
        return self.home if key is None else self.link_for_key(key)

    def places(self, keys: list[bytes]) -> int:
        """On how many shards ``keys`` are."""
        return len({id(self.link_for_key(k)) for k in keys})

    def _fan_out(self, args: tuple[Arg, ...]) -> Callable[[list[Any]], Any] | None:
        """How to merge a command that every shard answers, or ``None`` for a routed one."""
        name = _raw(args[0]).upper()
        if len(args) == 1 and name == b"PING":
            return lambda replies: replies[0]
        if len(args) == 2 and _raw(args[1]) == _VERSION and name in (b"GET", b"INCR"):
            return _versions
        if len(args) == 2 and name == b"HGETALL" and _raw(args[1]) == _TOPICS:
            return lambda replies: [x for reply in replies for x in reply]
        if len(args) > 1 and name == b"SCRIPT" and _raw(args[1]).upper() == b"LOAD":
            return lambda replies: replies[0]
        if len(args) > 1 and name == b"PUBSUB":
            sub = _raw(args[1]).upper()
            if sub == b"CHANNELS":
                return lambda replies: sorted({x for reply in replies for x in reply})
            if sub == b"NUMPAT":
                return max  # a pattern subscription is made on every shard
        return None

    # -- writing -----------------------------------------------------------------------------

    def execute(self, *args: Arg) -> asyncio.Future[Reply]:
        """Queue a command on the shard of its topic, or on every shard (see the module doc)."""
        assert self.loop is not None
        if self._closed:
            raise ClientClosed("connection closed")
        name = _raw(args[0]).upper()
        if name == b"PUBSUB" and len(args) > 2 and _raw(args[1]).upper() in _NUMSUB:
            return self._spawn_future(self._numsub(args))
        merge = self._fan_out(args)
        if merge is not None:
            futs = [self._registry(link, args) for link in self.links]
            return self._spawn_future(_gather(futs, merge))
        keys = command_keys(args)
        if len(keys) > 1 and self.places(keys) > 1:
            # Run on one shard, the keys of the others would be missed (DEL) or misplaced
            # (MSET): refused, as a cluster refuses keys of two slots.
            fut: asyncio.Future[Reply] = self.loop.create_future()
            fut.set_exception(CrossSlot([k.decode(errors="replace") for k in keys]))
            return fut
        return self._link_of_args(args).execute(*args)

    def _registry(self, link: Link, args: tuple[Arg, ...]) -> asyncio.Future[Reply]:
        """One shard's part of a command every shard answers. The registry of a shard that
        is down is read from its last answer (and its version is not bumped): topics of the
        other shards are not held up by it."""
        assert self.loop is not None
        if len(args) == 2 and _raw(args[1]) in (_TOPICS, _VERSION):
            key = (id(link), _raw(args[0]).upper())
            if not link.connected and (key in self._registry_cache or key[1] == b"INCR"):
                fut: asyncio.Future[Reply] = self.loop.create_future()
                fut.set_result(self._registry_cache.get(key))
                return fut
            inner = link.execute(*args)
            inner.add_done_callback(lambda f: self._remember(key, f))
            return inner
        return link.execute(*args)

    def _remember(self, key: tuple[int, bytes], fut: asyncio.Future[Reply]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._registry_cache[key] = fut.result()

    def _spawn_future(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Reply]:
        assert self.loop is not None
        return self.loop.create_task(coro)

    async def _numsub(self, args: tuple[Arg, ...]) -> list[Any]:
        """``PUBSUB NUMSUB|SHARDNUMSUB ch...``: each channel counted on its own shard."""
        names = [_raw(c) for c in args[2:]]
        groups: dict[Link, list[bytes]] = {}
        for ch in names:
            groups.setdefault(self.link_for_key(ch), []).append(ch)
        replies = await asyncio.gather(
            *(link.execute(args[0], args[1], *chs) for link, chs in groups.items())
        )
        counts: dict[bytes, Any] = {}
        for reply in replies:
            it = iter(reply)
            counts.update(zip(it, it, strict=True))
        return [x for ch in names for x in (ch, counts.get(ch, 0))]

    def try_publish(self, prefix: Prefix, frames: list[bytes], batchable: bool) -> int:
        link = self._route(prefix)
        status = link.try_publish(prefix, frames, batchable)
        if status == BLOCKED:
            self._blocked = link
        return status

    def publish_nowait(self, prefix: bytes, frame: bytes, batchable: bool) -> bool:
        return self._route(prefix).publish_nowait(prefix, frame, batchable)

    def publish_threadsafe(
        self, prefix: bytes, frame: bytes, batchable: bool, timeout: float | None
    ) -> None:
        link = self._routes.get(prefix)
        if link is None:  # the route cache is the loop's: compute it there
            assert self.loop is not None
            fut = asyncio.run_coroutine_threadsafe(_call(self._route, prefix), self.loop)
            link = fut.result(timeout)
        link.publish_threadsafe(prefix, frame, batchable, timeout)

    def _link_of_data(self, data: bytes) -> Link:
        key = encoded_key(data)
        return self.home if key is None else self.link_for_key(key)

    def try_send(self, data: bytes, waiters: list[asyncio.Future[Reply] | None]) -> int:
        link = self._link_of_data(data)
        status = link.try_send(data, waiters)
        if status == BLOCKED:
            self._blocked = link
        return status

    def send_nowait(self, data: bytes, waiters: list[asyncio.Future[Reply] | None]) -> None:
        self._link_of_data(data).send_nowait(data, waiters)

    async def wait_writable(self, timeout: float | None) -> None:
        link = self._blocked
        if link is not None:
            await link.wait_writable(timeout)
            return
        for link in self.links:
            if link.blocked:
                await link.wait_writable(timeout)

    @property
    def blocked(self) -> bool:
        return any(link.blocked for link in self.links)

    def flush_now(self) -> None:
        for link in self.links:
            link.flush_now()


_NUMSUB = (b"NUMSUB", b"SHARDNUMSUB")


def _raw(arg: Arg) -> bytes:
    return arg if isinstance(arg, bytes) else str(arg).encode()


def _versions(replies: list[Any]) -> bytes:
    """The registry's version over every shard: changes when any shard's does."""
    return b"|".join(b"-" if r is None else _raw(r) for r in replies)


async def _gather(futs: list[asyncio.Future[Reply]], merge: Callable[[list[Any]], Any]) -> Any:
    try:
        return merge(list(await asyncio.gather(*futs)))
    finally:
        for fut in futs:  # retrieved, so that a second failure is not logged as unretrieved
            if fut.done() and not fut.cancelled():
                with contextlib.suppress(BaseException):
                    fut.exception()


async def _call(fn: Callable[[Prefix], Link], arg: Prefix) -> Link:
    return fn(arg)
