"""A Redis/Valkey Cluster behind the interface of one :class:`~herald._io.link.Link`.

:class:`ClusterLink` keeps one :class:`Link` per shard primary and routes every command by the
slot of its key (``_slots.command_key``): a durable topic's ``XADD`` and scripts go to the
shard of ``herald:{topic}:...``, a live publish to the shard of its channel. The client and the
modules under it (durable publish, consumer acks, requests) use it exactly as they use a
single-server link, so the fast paths (auto-pipelining, batch frames) work per shard.

Live publishes use sharded Pub/Sub (``SPUBLISH``: the message stays inside its shard), except
for topics some subscriber's *pattern* matches, topics declared ``sharded=False`` and every
topic of a client made with ``sharded=False``: those are published with ``PUBLISH``, which the
cluster bus carries to every node, where pattern subscriptions (``PSUBSCRIBE``) and plain
``SUBSCRIBE`` clients are served.
Which patterns are active is in a registry hash, ``herald:{herald}:patterns``, that
subscribers keep leases in and publishers re-read every :data:`PATTERN_REFRESH` seconds (see
``docs/scaling.md`` "Cluster" and :mod:`herald._pubsub.cluster`).

The slot map is read with ``CLUSTER SLOTS`` at connect, on a ``MOVED`` reply (fire-and-forget
publishes' errors included, counted by each link), when a connection is lost, and every
``refresh_interval`` seconds. After a failover, the link of the lost primary is pointed at the
replica that took over its slots: what was buffered during the outage goes there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import replace
from typing import Any

from herald._core.resp import Arg, prefix
from herald._core.slots import (
    SLOTS,
    Node,
    SlotMap,
    command_key,
    key_slot,
    parse_redirect,
    split_commands,
)
from herald._core.topics import match
from herald._core.url import Endpoint
from herald._errors import (
    AuthenticationFailed,
    ClientClosed,
    ConnectionFailed,
    HeraldError,
    ServerError,
    Timeout,
)

from .group import LinkGroup, call_on_loop
from .interface import BLOCKED, Connection, Prefix
from .link import Link
from .protocol import Reply
from .sharded import ShardedLink

log = logging.getLogger("herald")

PATTERNS_KEY = "herald:{herald}:patterns"  # hash: "<pattern> <subscriber id>" -> lease end (ms)
HOME_KEY = "herald:{herald}:topics"  # keyless commands go to this key's shard
PATTERN_REFRESH = 1.0  # seconds between publishers' reads of the pattern registry
PATTERN_LEASE = 30.0  # a subscriber renews its patterns' leases every third of this
MAX_ATTEMPTS = 30  # redirects and TRYAGAIN/CLUSTERDOWN retries of one command (~10 s)

_PUBLISH = b"PUBLISH"
_SPUBLISH = b"SPUBLISH"


class _Route:
    __slots__ = ("prefix", "slot")

    def __init__(self, slot: int, pfx: Prefix) -> None:
        self.slot = slot
        self.prefix = pfx


class ClusterLink(LinkGroup):
    """Every primary of a cluster, used as one link (see the module docstring).

    Example::

        link = ClusterLink(parse_url("redis+cluster://127.0.0.1:7000"), name="herald")
        await link.connect()
        await link.execute("SET", "herald:{orders}:x", "1")  # sent to the slot's primary
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        name: str,
        refresh_interval: float = 5.0,
        **options: Any,
    ) -> None:
        self.links: dict[Node, Link] = {}
        super().__init__(endpoint, name, options, self.links.values())
        self._connected: asyncio.Event | None = None
        self._options = options
        self.refresh_interval = refresh_interval
        self.seeds = [Node(h, p) for h, p in endpoint.seeds] or [Node(endpoint.host, endpoint.port)]
        self.slots = SlotMap()
        self._retired: list[Link] = []  # links of former primaries, closed with this one
        self._by_slot: list[Link | None] = [None] * SLOTS
        self._routes: dict[Prefix, _Route] = {}
        self._refresh: asyncio.Task[None] | None = None
        self._refresh_wanted = False
        self._errors_seen = 0
        self.patterns: frozenset[str] = frozenset()  # active patterns (registry and own)
        self.own_patterns: set[str] = set()  # this client's, known at once
        # Channels published with PUBLISH for plain SUBSCRIBE readers (topic policies), and
        # whether every channel is (the client's sharded=False).
        self.unsharded: frozenset[bytes] = frozenset()
        self.sharded = True
        self.listeners: list[Callable[[], None]] = []  # called after the slot map changed
        self.refreshes = 0
        self.failovers = 0
        self.redirects = 0

    # -- state (summed up over the primaries by LinkGroup) -----------------------------------

    @property
    def home(self) -> Link:
        """The link of the shard that holds Herald's registry keys (``{herald}``)."""
        link = self._by_slot[key_slot(HOME_KEY)]
        return link if link is not None else next(iter(self.links.values()))

    def endpoint_of(self, node: Node) -> Endpoint:
        return replace(self.endpoint, host=node.host, port=node.port, seeds=())

    def node_of(self, link: Link) -> Node:
        return Node(link.endpoint.host, link.endpoint.port)

    def link_for_slot(self, slot: int) -> Link:
        link = self._by_slot[slot]
        return link if link is not None else self.home

    def for_topic(self, topic: str) -> Connection:
        """This connection: every primary is waited for, as before slots are known."""
        return self

    def link_for_key(self, key: str | bytes) -> Link:
        """The link of the primary serving ``key``'s slot (a topic: its channel and keys)."""
        return self.link_for_slot(key_slot(key))

    async def connect(self) -> None:
        """Read the slot map from a seed node and connect to every primary."""
        self.loop = asyncio.get_running_loop()
        await self._read_slots(self.seeds)  # creates the links; they are connected here:
        await self._connect_members()
        self.server = self.home.server
        self._connected = asyncio.Event()
        self._connected.set()
        with contextlib.suppress(HeraldError, TimeoutError):  # e.g. an ACL without the key
            await self._read_patterns()  # before the first publish
        self._spawn(self._watch())

    async def wait_connected(self, timeout: float | None) -> None:
        if self._closed:
            raise ClientClosed("connection closed")
        try:
            async with asyncio.timeout(timeout):
                while not self.connected:
                    if self._closed:
                        raise ClientClosed("connection closed")
                    for link in list(self.links.values()):
                        if not link.connected:
                            await link.wait_connected(None)
                    if not self.connected:
                        await asyncio.sleep(0.05)  # a link was replaced meanwhile
        except TimeoutError:
            raise Timeout(
                f"not connected to every primary of the cluster within {timeout}s", timeout
            ) from None

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        if await self._close_members(self._retired) and self._connected is not None:
            self._connected.set()  # wake waiters so they see the close

    # -- the slot map ------------------------------------------------------------------------

    async def _read_slots(self, candidates: list[Node]) -> None:
        """Read ``CLUSTER SLOTS`` from the first node that answers and apply it."""
        errors: list[str] = []
        refused = False
        for node in candidates:
            link = self.links.get(node)
            try:
                if link is not None and link.connected:
                    reply = await asyncio.wait_for(link.execute("CLUSTER", "SLOTS"), 2.0)
                else:
                    reply = await self._ask(node)
            except (HeraldError, OSError, TimeoutError) as exc:
                errors.append(f"{node.address}: {exc}")
                refused = refused or isinstance(exc, AuthenticationFailed)
                continue
            slots = SlotMap.from_cluster_slots(reply, default_host=node.host)
            if not slots.shards:
                errors.append(f"{node.address}: no slot is served")
                continue
            self._apply(slots)
            return
        # A wrong user or password is the user's to fix, not a node being down: say so.
        error = AuthenticationFailed if refused else ConnectionFailed
        raise error("no cluster node answered CLUSTER SLOTS: " + "; ".join(errors))

    async def _ask(self, node: Node) -> Any:
        opts = {**self._options, "probe_interval": 0, "probe_timeout": None}
        opts["connect_timeout"] = min(float(opts.get("connect_timeout") or 5.0), 2.0)
        link = Link(self.endpoint_of(node), name=f"{self.name}-slots", **opts)
        await link.connect()
        try:
            return await asyncio.wait_for(link.execute("CLUSTER", "SLOTS"), 2.0)
        finally:
            await link.close()

    def _apply(self, slots: SlotMap) -> None:
        if self._closed:
            return
        old = self.slots
        self.slots = slots
        self.refreshes += 1
        primaries = slots.primaries
        # A primary that is gone: its link follows the slots to the node serving them now.
        for node, link in list(self.links.items()):
            if node in primaries:
                continue
            heir = self._heir(old, slots, node)
            del self.links[node]
            if heir is not None and heir not in self.links:
                log.warning(
                    "cluster: %s is no longer a primary, now %s", node.address, heir.address
                )
                self.failovers += 1
                link.endpoint = self.endpoint_of(heir)
                link.address = link.endpoint.address
                self.links[heir] = link
                if link.loop is not None and not link.connected:
                    self._nudge(link)
            else:
                self._retired.append(link)
                self._spawn(link.close())
        for node in primaries:
            if node not in self.links:
                link = self._new_link(node)
                self.links[node] = link
                if self.loop is not None and self._connected is not None:
                    self._spawn(self._connect_new(link))
        by_slot: list[Link | None] = [None] * SLOTS
        for slot in range(SLOTS):
            owner = slots.node_for(slot)
            if owner is not None:
                by_slot[slot] = self.links[owner]
        self._by_slot = by_slot
        if old.shards != slots.shards:
            for listener in list(self.listeners):
                listener()

    def _new_link(self, node: Node) -> Link:
        return Link(self.endpoint_of(node), name=f"{self.name}-{node.port}", **self._options)

    @staticmethod
    def _heir(old: SlotMap, new: SlotMap, node: Node) -> Node | None:
        for shard in old.shards:
            if shard.primary == node and shard.ranges:
                return new.node_for(shard.ranges[0][0])
        return None

    def _nudge(self, link: Link) -> None:
        # A link waiting out its reconnect backoff against a dead address: try the new one now.
        link.drop("the slot map points elsewhere")

    async def _connect_new(self, link: Link) -> None:
        backoff = 0.05
        while not self._closed and link.loop is None:
            try:
                await link.connect()
                return
            except HeraldError as exc:
                log.info("cluster: cannot connect to %s yet: %s", link.endpoint.address, exc)
                self.refresh_soon()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def refresh_soon(self) -> None:
        """Re-read the slot map now (coalesced: one read in flight)."""
        if self._closed or self.loop is None:
            return
        if self._refresh is not None and not self._refresh.done():
            self._refresh_wanted = True
            return
        self._refresh = self.loop.create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while not self._closed:
            self._refresh_wanted = False
            live = [n for n, link in self.links.items() if link.connected]
            others = [n for n in self.slots.nodes + self.seeds if n not in live]
            try:
                await self._read_slots(live + others)
            except HeraldError as exc:
                log.warning("cluster: slot map refresh failed: %s", exc)
                await asyncio.sleep(0.2)
                continue
            if not self._refresh_wanted:
                return

    async def _watch(self) -> None:
        """Refresh the slot map when a link reports new errors (MOVED to fire-and-forget
        publishes), while one is down, and every ``refresh_interval``; re-read the patterns."""
        last_full = last_patterns = time.monotonic()
        while not self._closed:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            errors = self.errors
            down = any(not link.connected for link in self.links.values())
            if errors != self._errors_seen or (down and now - last_full > 0.25):
                self._errors_seen = errors
                last_full = now
                self.refresh_soon()
            elif now - last_full >= self.refresh_interval:
                last_full = now
                self.refresh_soon()
            if now - last_patterns >= PATTERN_REFRESH:
                last_patterns = now
                with contextlib.suppress(HeraldError, TimeoutError):
                    await self._read_patterns()

    # -- pattern registry --------------------------------------------------------------------

    async def _read_patterns(self) -> None:
        raw = await asyncio.wait_for(self.execute("HGETALL", PATTERNS_KEY), 2.0)
        now_ms = time.time() * 1000
        active = set(self.own_patterns)
        it = iter(raw)
        for field, until in zip(it, it, strict=True):
            if float(until) > now_ms:
                active.add(field.decode().rsplit(" ", 1)[0])
        self.set_patterns(active)

    def set_patterns(self, active: AbstractSet[str]) -> None:
        if frozenset(active) != self.patterns:
            self.patterns = frozenset(active)
            self._routes.clear()

    def _matched(self, channel: bytes) -> bool:
        """Publish ``channel`` with PUBLISH: some subscriber's pattern matches it, or it is
        read by plain ``SUBSCRIBE`` clients (``sharded=False``)."""
        if not self.sharded or channel in self.unsharded:
            return True
        return any(match(p, channel) for p in self.patterns)

    def set_unsharded(self, channels: AbstractSet[bytes], sharded: bool = True) -> None:
        """Publish ``channels`` (every channel, unless ``sharded``) with PUBLISH from now on."""
        channels = frozenset(channels)
        if channels != self.unsharded or sharded != self.sharded:
            self.unsharded = channels
            self.sharded = sharded
            self._routes.clear()

    # -- routing -----------------------------------------------------------------------------

    def _route(self, pfx: Prefix) -> _Route:
        route = self._routes.get(pfx)
        if route is not None:
            return route
        if isinstance(pfx, bytes):
            # b"*3\r\n$7\r\nPUBLISH\r\n$<n>\r\n<channel>\r\n$"
            head = pfx.index(b"\r\n", 4) + 2
            name_end = pfx.index(b"\r\n", head)
            size_end = pfx.index(b"\r\n", name_end + 2)
            channel = pfx[size_end + 2 : size_end + 2 + int(pfx[name_end + 3 : size_end])]
            name = pfx[head:name_end]
            routed: Prefix = pfx
            if name == _PUBLISH and not self._matched(channel):
                routed = prefix(_SPUBLISH, channel)
            route = _Route(key_slot(channel), routed)
        else:
            topic = getattr(pfx, "topic", None)
            route = _Route(key_slot(topic) if isinstance(topic, str) else key_slot(HOME_KEY), pfx)
        if len(self._routes) > 10_000:
            self._routes.clear()
        self._routes[pfx] = route
        return route

    def _link_of_args(self, args: tuple[Arg, ...]) -> tuple[Link, tuple[Arg, ...]]:
        if _name(args[0]) == _PUBLISH and len(args) == 3:
            channel = args[1] if isinstance(args[1], bytes) else str(args[1]).encode()
            if not self._matched(channel):
                args = (_SPUBLISH, *args[1:])
            return self.link_for_slot(key_slot(channel)), args
        key = command_key(args)
        return (self.home if key is None else self.link_for_slot(key_slot(key))), args

    # -- writing -----------------------------------------------------------------------------

    def execute(self, *args: Arg) -> asyncio.Future[Reply]:
        """Queue a command on the primary of its key's slot; follow MOVED/ASK redirects."""
        fut: asyncio.Future[Reply] = self._open_loop().create_future()
        if _name(args[0]) == b"PING" and len(args) == 1:
            # Answered once every primary answered: all queued before it was written (flush).
            self._spawn(self._ping_all(fut))
            return fut
        if _name(args[0]) == b"PUBSUB" and len(args) > 2 and _name(args[1]) == b"SHARDNUMSUB":
            # A sharded channel's subscribers are counted by its slot's primary only.
            return self._spawn_future(self._numsub(args[:2], args[2:]))
        if _name(args[0]) == b"SCRIPT" and len(args) > 1 and _name(args[1]) == b"LOAD":
            # Scripts are loaded on every primary: EVALSHA may go to any of them.
            for link in self.links.values():
                if link is not self.home:
                    link.execute(*args).add_done_callback(_consume)
        link, routed = self._link_of_args(args)
        self._send(link, routed, args, fut, 0, False)
        return fut

    def _send(
        self,
        link: Link,
        routed: tuple[Arg, ...],
        args: tuple[Arg, ...],
        fut: asyncio.Future[Reply],
        attempt: int,
        asking: bool,
    ) -> None:
        try:
            if asking:
                link.execute("ASKING").add_done_callback(_consume)
            inner = link.execute(*routed)
        except ClientClosed as exc:
            if self._closed:
                fut.set_exception(exc)
                return
            self._spawn(self._retry(args, fut, attempt + 1, None, 0.05))
            return
        inner.add_done_callback(lambda f: self._replied(f, args, fut, attempt))

    def _replied(
        self,
        inner: asyncio.Future[Reply],
        args: tuple[Arg, ...],
        fut: asyncio.Future[Reply],
        attempt: int,
    ) -> None:
        if fut.done():
            if not inner.cancelled():
                inner.exception()
            return
        exc = _relay(inner, fut)
        if exc is None:
            return
        if isinstance(exc, ServerError) and attempt < MAX_ATTEMPTS:
            redirect = parse_redirect(exc.reply, self.endpoint.host)
            if redirect is not None:
                self.redirects += 1
                if redirect.kind == "MOVED":
                    self.slots.moved(redirect.slot, redirect.node)
                    self.refresh_soon()
                self._spawn(self._retry(args, fut, attempt + 1, redirect.node, 0.0, redirect.kind))
                return
            if exc.reply.startswith(("TRYAGAIN", "CLUSTERDOWN")):
                self.refresh_soon()
                delay = min(0.05 * (attempt + 1), 0.5)
                self._spawn(self._retry(args, fut, attempt + 1, None, delay))
                return
        if isinstance(exc, ClientClosed) and not self._closed:
            self._spawn(self._retry(args, fut, attempt + 1, None, 0.05))
            return
        fut.set_exception(exc)

    async def _retry(
        self,
        args: tuple[Arg, ...],
        fut: asyncio.Future[Reply],
        attempt: int,
        node: Node | None,
        delay: float,
        kind: str = "MOVED",
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        if fut.done():
            return
        if node is not None:
            link = self.links.get(node)
            if link is None:
                await self._read_slots_quietly()
                link = self.links.get(node)
            if link is None:  # an ASK target that is not a primary in our map: a transient link
                link = self._new_link(node)
                self.links[node] = link
                await self._connect_new(link)
            routed = self._link_of_args(args)[1]
            self._send(link, routed, args, fut, attempt, kind == "ASK")
            return
        link, routed = self._link_of_args(args)
        self._send(link, routed, args, fut, attempt, False)

    async def _read_slots_quietly(self) -> None:
        with contextlib.suppress(HeraldError):
            live = [n for n, link in self.links.items() if link.connected]
            await self._read_slots(live + self.seeds)

    def try_publish(self, prefix: Prefix, frames: list[bytes], batchable: bool) -> int:
        route = self._route(prefix)
        link = self.link_for_slot(route.slot)
        return self._note(link, link.try_publish(route.prefix, frames, batchable))

    def publish_nowait(self, prefix: bytes, frame: bytes, batchable: bool) -> bool:
        route = self._route(prefix)
        assert isinstance(route.prefix, bytes)
        return self.link_for_slot(route.slot).publish_nowait(route.prefix, frame, batchable)

    def publish_threadsafe(
        self, prefix: bytes, frame: bytes, batchable: bool, timeout: float | None
    ) -> None:
        route = self._routes.get(prefix)
        if route is None:  # computed on the loop: the route cache is the loop's
            fut = asyncio.run_coroutine_threadsafe(call_on_loop(self._route, prefix), self._loop())
            route = fut.result(timeout)
        assert isinstance(route.prefix, bytes)
        link = self.link_for_slot(route.slot)
        link.publish_threadsafe(route.prefix, frame, batchable, timeout)

    def try_send(self, data: bytes, waiters: list[asyncio.Future[Reply] | None]) -> int:
        link = self._link_of_data(data)
        if any(w is not None for w in waiters):
            # Confirmed (a durable publish): a command answered MOVED/ASK is sent again where
            # its slot is served now; the others' replies stand (no live copy goes out twice).
            inner: list[asyncio.Future[Reply] | None] = [
                None if w is None else self._loop().create_future() for w in waiters
            ]
            status = link.try_send(data, inner)
            if status != BLOCKED:
                self._spawn(self._settle(data, waiters, inner))
        else:
            status = link.try_send(data, waiters)
        return self._note(link, status)

    async def _settle(
        self,
        data: bytes,
        waiters: list[asyncio.Future[Reply] | None],
        inner: list[asyncio.Future[Reply] | None],
    ) -> None:
        try:
            await self._settle_in_order(data, waiters, inner)
        except asyncio.CancelledError:  # the connection closes: no caller is left waiting
            for outer in waiters:
                if outer is not None and not outer.done():
                    outer.set_exception(ClientClosed("connection closed"))
            raise

    async def _settle_in_order(
        self,
        data: bytes,
        waiters: list[asyncio.Future[Reply] | None],
        inner: list[asyncio.Future[Reply] | None],
    ) -> None:
        await asyncio.gather(*(f for f in inner if f is not None), return_exceptions=True)
        commands: list[tuple[bytes, ...]] | None = None
        for i, (outer, fut) in enumerate(zip(waiters, inner, strict=True)):
            if outer is None or fut is None or outer.done():
                continue
            exc = _relay(fut, outer)
            if exc is None:
                continue
            if isinstance(exc, ServerError) and parse_redirect(exc.reply) is not None:
                commands = commands if commands is not None else split_commands(data)
                again: asyncio.Future[Reply] = self._loop().create_future()
                self._replied(fut, commands[i], again, 0)
                # Waited for before the later replies are set: callers rely on their order.
                await asyncio.wait((again,))
                if not outer.done() and (err := _relay(again, outer)) is not None:
                    outer.set_exception(err)
            else:
                outer.set_exception(exc)

    async def _ping_all(self, fut: asyncio.Future[Reply]) -> None:
        try:
            replies = await asyncio.gather(*(link.execute("PING") for link in self.links.values()))
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if not fut.done():
            fut.set_result(replies[0] if replies else b"PONG")


def new_link(endpoint: Endpoint, *, name: str, **options: Any) -> Connection:
    """A :class:`Link` to ``endpoint``, a :class:`ClusterLink` for ``redis+cluster://``, a
    :class:`~herald._io.sharded.ShardedLink` for a sharded client."""
    if endpoint.shards:
        return ShardedLink(endpoint, name=name, **options)
    if endpoint.seeds:
        return ClusterLink(endpoint, name=name, **options)
    return Link(endpoint, name=name, **options)


def _name(arg: Arg) -> bytes:
    return (arg if isinstance(arg, bytes) else str(arg).encode()).upper()


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _relay(inner: asyncio.Future[Reply], outer: asyncio.Future[Reply]) -> BaseException | None:
    """Pass ``inner``'s cancellation or result on to ``outer``; its error is returned instead,
    for the caller to retry or set."""
    if inner.cancelled():
        outer.cancel()
        return None
    exc = inner.exception()
    if exc is None:
        outer.set_result(inner.result())
    return exc
