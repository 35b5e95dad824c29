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
from collections.abc import Callable
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
from herald._core.slots import command_key, command_keys
from herald._core.streams import TOPICS_KEY, TOPICS_VERSION_KEY
from herald._core.url import Endpoint
from herald._errors import ClientClosed, CrossSlot, HeraldError, Timeout
from herald._io.group import LinkGroup, call_on_loop, raw
from herald._io.interface import Prefix
from herald._io.link import Link
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


class ShardedLink(LinkGroup):
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
        resolvers = resolvers if resolvers is not None else shard_resolvers(endpoint)
        self.links = [
            Link(ep, name=f"{name}-{i}", resolver=resolvers.get(n), **options)
            for i, (n, ep) in enumerate(endpoint.shards)
        ]
        super().__init__(endpoint, name, options, self.links)
        self.other_lists: set[tuple[str, ...]] = set()  # lists of shards other clients use
        self.names = tuple(n for n, _ in endpoint.shards)
        self._routes: dict[Prefix, Link] = {}
        self._by_key: dict[bytes, Link] = {}
        self._registry_cache: dict[tuple[int, bytes], Reply] = {}

    # -- state (summed up over the shards by LinkGroup) --------------------------------------

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
        await self._connect_members()
        self.server = self.home.server
        await self._check_lists()
        self._spawn(self._renew_lists())

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
        await self._close_members()

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
        name = raw(args[0]).upper()
        if name == b"PUBLISH" and len(args) > 1:
            return self.link_for_key(raw(args[1]))
        if name in _EVAL and len(args) > 4 and raw(args[3]) == _TOPICS:
            return self.link_for_key(raw(args[3 + int(args[2])]))  # declare/restore: ARGV[1]
        if len(args) > 2 and raw(args[1]) == _TOPICS and name in (b"HDEL", b"HGET", b"HSET"):
            return self.link_for_key(raw(args[2]))  # a topic's policy is where the topic is
        key = command_key(args)
        return self.home if key is None else self.link_for_key(key)

    def places(self, keys: list[bytes]) -> int:
        """On how many shards ``keys`` are."""
        return len({id(self.link_for_key(k)) for k in keys})

    def _fan_out(self, args: tuple[Arg, ...]) -> Callable[[list[Any]], Any] | None:
        """How to merge a command that every shard answers, or ``None`` for a routed one."""
        name = raw(args[0]).upper()
        if len(args) == 1 and name == b"PING":
            return lambda replies: replies[0]
        if len(args) == 2 and raw(args[1]) == _VERSION and name in (b"GET", b"INCR"):
            return _versions
        if len(args) == 2 and name == b"HGETALL" and raw(args[1]) == _TOPICS:
            return lambda replies: [x for reply in replies for x in reply]
        if len(args) > 1 and name == b"SCRIPT" and raw(args[1]).upper() == b"LOAD":
            return lambda replies: replies[0]
        if len(args) > 1 and name == b"PUBSUB":
            sub = raw(args[1]).upper()
            if sub == b"CHANNELS":
                return lambda replies: sorted({x for reply in replies for x in reply})
            if sub == b"NUMPAT":
                return max  # a pattern subscription is made on every shard
        return None

    # -- writing -----------------------------------------------------------------------------

    def execute(self, *args: Arg) -> asyncio.Future[Reply]:
        """Queue a command on the shard of its topic, or on every shard (see the module doc)."""
        loop = self._open_loop()
        name = raw(args[0]).upper()
        if name == b"PUBSUB" and len(args) > 2 and raw(args[1]).upper() in _NUMSUB:
            return self._spawn_future(self._numsub(args[:2], args[2:]))
        merge = self._fan_out(args)
        if merge is not None:
            futs = [self._registry(link, args) for link in self.links]
            return self._spawn_future(_gather(futs, merge))
        keys = command_keys(args)
        if len(keys) > 1 and self.places(keys) > 1:
            # Run on one shard, the keys of the others would be missed (DEL) or misplaced
            # (MSET): refused, as a cluster refuses keys of two slots.
            fut: asyncio.Future[Reply] = loop.create_future()
            fut.set_exception(CrossSlot([k.decode(errors="replace") for k in keys]))
            return fut
        return self._link_of_args(args).execute(*args)

    def _registry(self, link: Link, args: tuple[Arg, ...]) -> asyncio.Future[Reply]:
        """One shard's part of a command every shard answers. The registry of a shard that
        is down is read from its last answer (and its version is not bumped): topics of the
        other shards are not held up by it."""
        assert self.loop is not None
        if len(args) == 2 and raw(args[1]) in (_TOPICS, _VERSION):
            key = (id(link), raw(args[0]).upper())
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

    def try_publish(self, prefix: Prefix, frames: list[bytes], batchable: bool) -> int:
        link = self._route(prefix)
        return self._note(link, link.try_publish(prefix, frames, batchable))

    def publish_nowait(self, prefix: bytes, frame: bytes, batchable: bool) -> bool:
        return self._route(prefix).publish_nowait(prefix, frame, batchable)

    def publish_threadsafe(
        self, prefix: bytes, frame: bytes, batchable: bool, timeout: float | None
    ) -> None:
        link = self._routes.get(prefix)
        if link is None:  # the route cache is the loop's: compute it there
            fut = asyncio.run_coroutine_threadsafe(call_on_loop(self._route, prefix), self._loop())
            link = fut.result(timeout)
        link.publish_threadsafe(prefix, frame, batchable, timeout)

    def try_send(self, data: bytes, waiters: list[asyncio.Future[Reply] | None]) -> int:
        link = self._link_of_data(data)
        return self._note(link, link.try_send(data, waiters))


_NUMSUB = (b"NUMSUB", b"SHARDNUMSUB")


def _versions(replies: list[Any]) -> bytes:
    """The registry's version over every shard: changes when any shard's does."""
    return b"|".join(b"-" if r is None else raw(r) for r in replies)


async def _gather(futs: list[asyncio.Future[Reply]], merge: Callable[[list[Any]], Any]) -> Any:
    try:
        return merge(list(await asyncio.gather(*futs)))
    finally:
        for fut in futs:  # retrieved, so that a second failure is not logged as unretrieved
            if fut.done() and not fut.cancelled():
                with contextlib.suppress(BaseException):
                    fut.exception()
