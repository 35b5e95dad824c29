"""Subscribing on a cluster: sharded channels per shard, patterns and scripts' publishes on one
connection, subscriptions that follow their slot.

A client's subscriptions on a cluster use:

- one connection per shard primary for ``SSUBSCRIBE``: a topic's live messages (``SPUBLISH``)
  reach only its shard, and Valkey serves a sharded subscription only on the slot's primary;
- one more connection (this class's own, a plain :class:`~herald._pubsub.subscriber.Subscriber`) for
  ``PSUBSCRIBE`` of patterns and ``SUBSCRIBE`` of topics: messages published with ``PUBLISH``
  (a topic some pattern matches, and the live copies that durable and recoverable topics'
  scripts publish) travel the cluster bus to every node, so any node will do.

A publisher sends each message one way only (see :mod:`herald._io.cluster`), so each subscription
gets it once. When a slot moves (the server sends ``sunsubscribe``) or its primary fails over,
the topic's sharded subscription is made again on the slot's new primary and the subscription
is told of the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from herald._core.backoff import Backoff
from herald._core.message import Message, is_request
from herald._core.resp import command
from herald._core.slots import Node, key_slot, parse_redirect
from herald._core.topics import is_pattern
from herald._core.url import Endpoint
from herald._core.wire import decode
from herald._errors import HeraldError, PermissionDenied, ServerError
from herald._io.cluster import PATTERN_LEASE, PATTERN_REFRESH, PATTERNS_KEY, ClusterLink, _consume
from herald._io.interface import Connection
from herald._io.link import Link
from herald._io.sharded import ShardedLink

from .sharded import ShardedSubscriber
from .subscriber import Subscriber, not_confirmed, went_down
from .subscription import Gap, Subscription

log = logging.getLogger("herald")


class _Channel:
    """One sharded channel and the subscriptions that share it."""

    __slots__ = ("name", "raw", "shard", "slot", "subs")

    def __init__(self, name: str) -> None:
        self.name = name
        self.raw = name.encode()
        self.slot = key_slot(self.raw)
        self.subs: list[Subscription] = []
        self.shard: _Shard | None = None


class _Shard:
    """The ``SSUBSCRIBE`` connection to one primary."""

    def __init__(self, owner: ClusterSubscriber, node: Node, **link_options: Any) -> None:
        self.owner = owner
        self.node = node
        self.channels: dict[bytes, _Channel] = {}
        self.down_since: float | None = None
        self.down_detected = 0.0
        self.down_reason = ""
        self.subscribed_at = 0.0  # when the last confirmed SSUBSCRIBE was sent
        self.last: Message | None = None  # the last message that arrived
        self.link = Link(
            owner.router.endpoint_of(node),
            on_push=self._on_push,
            on_connect=self._resubscribe,
            on_disconnect=self._down,
            **link_options,
        )

    def _on_push(self, reply: list[Any]) -> None:
        if reply[0] == b"smessage":
            entry = self.channels.get(reply[1])
            if entry is None:
                return
            messages = decode(entry.name, reply[2])
            self.last = messages[-1]
            first = messages[0]
            replier = self.owner.replier
            if (h := first._headers) and is_request(h) and len(messages) == 1 and replier:
                first._replier = replier
            for sub in entry.subs:
                sub._deliver(messages)
        elif reply[0] == b"sunsubscribe":
            # Unrequested: the slot moved to another node (ours are forgotten before sending).
            entry = self.channels.pop(reply[1], None)
            if entry is not None:
                self.owner._rehome(entry, time.time(), f"slot {entry.slot} moved")

    def _down(self, exc: Exception | None) -> None:
        if self.down_since is None:
            self.down_since, self.down_detected, self.down_reason = went_down(
                self.subscribed_at, self.link, self.last, exc
            )
        self.owner.router.refresh_soon()

    async def _resubscribe(self) -> None:
        entries = list(self.channels.values())
        sent = time.time()
        futs = [self.link.execute("SSUBSCRIBE", e.raw) for e in entries]
        results = await asyncio.gather(*futs, return_exceptions=True)
        if self.link.connected:
            self.subscribed_at = max(self.subscribed_at, sent)
        since, reason = self.down_since, self.down_reason
        self.down_since = None
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, ServerError) and parse_redirect(result.reply):
                if self.channels.pop(entry.raw, None) is not None:
                    self.owner._rehome(entry, since or time.time(), reason or "slot moved")
            elif isinstance(result, PermissionDenied):
                for sub in list(entry.subs):
                    sub._fail(result)
        if since is not None:
            self.owner._gap([e for e in entries if e.shard is self], since, reason)

    def subscribe(self, entry: _Channel) -> asyncio.Future[Any] | None:
        entry.shard = self
        self.channels[entry.raw] = entry
        if not self.link.connected:
            return None
        self.subscribed_at = max(self.subscribed_at, time.time())
        return self.link.execute("SSUBSCRIBE", entry.raw)

    def unsubscribe(self, entry: _Channel) -> None:
        if self.channels.pop(entry.raw, None) is None:
            return
        if self.link.connected:
            # No waiter: the reply is a push ("sunsubscribe"), which _on_push ignores now.
            self.link.send_nowait(command("SUNSUBSCRIBE", entry.raw), [])

    async def close(self) -> None:
        await self.link.close()


class ClusterSubscriber(Subscriber):
    """A client's subscriptions on a cluster (see the module docstring)."""

    # Alike ShardedSubscriber's and Subscriber's on purpose: new_subscriber makes them the same way.
    def __init__(
        self,
        router: ClusterLink,
        *,
        name: str,
        subscribe_timeout: float = 10.0,
        replier: Any = None,
        **link_options: Any,
    ) -> None:
        home = router.node_of(router.home)
        super().__init__(
            router.endpoint_of(home),
            name=name,
            subscribe_timeout=subscribe_timeout,
            replier=replier,
            **link_options,
        )
        self.router = router
        self._name = name
        self._options = link_options
        self._shards: dict[Node, _Shard] = {}
        self._retired: list[_Shard] = []
        self._sharded: dict[bytes, _Channel] = {}
        self._leases: dict[str, int] = {}  # pattern -> subscriptions using it
        self._lease_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.moves = 0
        router.listeners.append(self._topology_changed)

    # -- subscriptions -----------------------------------------------------------------------

    async def add(self, sub: Subscription, names: tuple[str, ...] | None = None) -> None:
        # SUBSCRIBE topics, PSUBSCRIBE patterns on the global connection
        await super().add(sub, names)
        try:
            async with asyncio.timeout(self.subscribe_timeout):
                waits = []
                fresh: list[str] = []
                for name in sub.names if names is None else names:
                    if is_pattern(name):
                        self._leases[name] = self._leases.get(name, 0) + 1
                        if self._leases[name] == 1:
                            fresh.append(name)
                        continue
                    raw = name.encode()
                    entry = self._sharded.get(raw)
                    if entry is None:
                        entry = self._sharded[raw] = _Channel(name)
                        entry.subs.append(sub)
                        waits.append(self._place(entry))
                    else:
                        entry.subs.append(sub)
                await asyncio.gather(*waits)
                if fresh:
                    await self._lease(fresh)
                    # Publishers re-read the registry every PATTERN_REFRESH: from then on they
                    # publish matching topics so that this pattern receives them.
                    await asyncio.sleep(PATTERN_REFRESH + 0.1)
        except TimeoutError:
            await self.remove(sub, names)
            raise not_confirmed("sharded subscribe", sub, self.subscribe_timeout, names) from None
        except BaseException:
            await self.remove(sub, names)
            raise

    async def _place(self, entry: _Channel) -> None:
        """SSUBSCRIBE on the slot's primary, following MOVED until a node accepts it."""
        node = self.router.slots.node_for(entry.slot)
        for _ in range(10):
            if node is None:
                await asyncio.sleep(0.1)
                self.router.refresh_soon()
                node = self.router.slots.node_for(entry.slot)
                continue
            shard = self._shard(node)
            await shard.link.ensure_connected()
            if not entry.subs:
                return  # removed meanwhile
            ready = shard.subscribe(entry)
            if ready is None:
                await shard.link.wait_connected(self.subscribe_timeout)
                return  # subscribed by the shard's reconnect
            try:
                await ready
                return
            except ServerError as exc:
                redirect = parse_redirect(exc.reply, node.host)
                if redirect is None:
                    raise
                shard.channels.pop(entry.raw, None)
                self.router.slots.moved(redirect.slot, redirect.node)
                self.router.refresh_soon()
                node = redirect.node
        raise HeraldError(f"cannot subscribe to {entry.name!r}: its slot keeps moving")

    def _shard(self, node: Node) -> _Shard:
        shard = self._shards.get(node)
        if shard is None:
            opts = {**self._options, "name": f"{self._name}-{node.port}"}
            shard = self._shards[node] = _Shard(self, node, **opts)
        return shard

    def _unshard(self, sub: Subscription, names: tuple[str, ...] | None = None) -> list[str]:
        gone_patterns = []
        for name in sub.names if names is None else names:
            if is_pattern(name):
                count = self._leases.get(name, 0) - 1
                if count <= 0:
                    self._leases.pop(name, None)
                    gone_patterns.append(name)
                else:
                    self._leases[name] = count
                continue
            raw = name.encode()
            entry = self._sharded.get(raw)
            if entry is None or sub not in entry.subs:
                continue
            entry.subs = [s for s in entry.subs if s is not sub]
            if not entry.subs:
                del self._sharded[raw]
                if entry.shard is not None:
                    entry.shard.unsubscribe(entry)
        return gone_patterns

    async def remove(self, sub: Subscription, names: tuple[str, ...] | None = None) -> None:
        await super().remove(sub, names)
        gone = self._unshard(sub, names)
        if gone:
            self._own_patterns()
            with contextlib.suppress(HeraldError):
                await self.router.execute("HDEL", PATTERNS_KEY, *(self._field(p) for p in gone))

    def discard(self, sub: Subscription) -> None:
        super().discard(sub)
        gone = self._unshard(sub)
        if gone:
            self._own_patterns()
            fut = self.router.execute("HDEL", PATTERNS_KEY, *(self._field(p) for p in gone))
            fut.add_done_callback(_consume)

    async def close(self) -> None:
        if self._topology_changed in self.router.listeners:
            self.router.listeners.remove(self._topology_changed)
        if self._lease_task is not None:
            self._lease_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._leases and not self.router._closed:
            with contextlib.suppress(HeraldError, TimeoutError):
                fields = [self._field(p) for p in self._leases]
                await asyncio.wait_for(self.router.execute("HDEL", PATTERNS_KEY, *fields), 1.0)
        for shard in [*self._shards.values(), *self._retired]:
            await shard.close()
        await super().close()

    # -- pattern leases ----------------------------------------------------------------------

    def _field(self, pattern: str) -> str:
        return f"{pattern} {self._name}"

    def _own_patterns(self) -> None:
        self.router.own_patterns = set(self._leases)
        self.router.set_patterns(self.router.patterns | self.router.own_patterns)

    async def _lease(self, patterns: list[str]) -> None:
        self._own_patterns()
        until = int((time.time() + PATTERN_LEASE) * 1000)
        args: list[Any] = []
        for p in patterns:
            args += [self._field(p), until]
        await self.router.execute("HSET", PATTERNS_KEY, *args)
        if self._lease_task is None:
            self._lease_task = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(PATTERN_LEASE / 3)
            if self._leases:
                with contextlib.suppress(HeraldError, TimeoutError):
                    await asyncio.wait_for(self._lease(list(self._leases)), PATTERN_LEASE / 3)

    # -- moving with the slots ---------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _rehome(self, entry: _Channel, since: float, reason: str) -> None:
        """Subscribe ``entry`` again where its slot is served now; report the gap."""
        entry.shard = None
        self.moves += 1
        self.router.refresh_soon()

        async def move() -> None:
            # Until it is placed or no longer wanted, as a connection keeps reconnecting: a
            # subscription that silently stopped trying would never hear of its topic again.
            backoff = Backoff(cap=1.0)
            while entry.subs and self._sharded.get(entry.raw) is entry:
                try:
                    await self._place(entry)
                except (HeraldError, OSError) as exc:
                    log.info("resubscribing %r after %s: %s", entry.name, reason, exc)
                    await asyncio.sleep(backoff.next())
                    continue
                self._gap([entry], since, reason)
                return

        self._spawn(move())

    def _gap(self, entries: list[_Channel], since: float, reason: str) -> None:
        if not entries:
            return
        self.gaps += 1
        now = time.time()
        subs: dict[int, Subscription] = {}
        for entry in entries:
            for sub in entry.subs:
                subs[id(sub)] = sub
        for sub in subs.values():
            sub._gap(Gap(sub.names, since, now, reason))

    def _topology_changed(self) -> None:
        """The slot map changed: move sharded channels whose slot's primary is another node;
        point the global connection at a primary if its node is not one any more."""
        primaries = set(self.router.slots.primaries)
        home = self.router.node_of(self.link)
        if home not in primaries and primaries:
            new = self.router.node_of(self.router.home)
            self.link.endpoint = self.router.endpoint_of(new)
            self.link.address = self.link.endpoint.address
            if not self.link.connected:
                self.link.drop("the slot map points elsewhere")  # reconnect there now
        for node, shard in list(self._shards.items()):
            for entry in list(shard.channels.values()):
                owner = self.router.slots.node_for(entry.slot)
                if owner is not None and owner != node:
                    shard.channels.pop(entry.raw, None)
                    if shard.link.connected:
                        shard.link.send_nowait(command("SUNSUBSCRIBE", entry.raw), [])
                    since = shard.down_since or time.time()
                    self._rehome(entry, since, shard.down_reason or f"slot {entry.slot} moved")
            if not shard.channels and node not in primaries:
                del self._shards[node]
                self._retired.append(shard)
                self._spawn(shard.close())


def new_subscriber(
    link: Connection,
    endpoint: Endpoint,
    *,
    name: str,
    subscribe_timeout: float,
    replier: Any,
    **options: Any,
) -> Subscriber:
    """The subscriber of a client whose command connection is ``link``: a
    :class:`ClusterSubscriber` on a cluster, else a :class:`Subscriber` of ``endpoint``."""
    if isinstance(link, ShardedLink):
        sharded = ShardedSubscriber(
            link, name=name, subscribe_timeout=subscribe_timeout, replier=replier, **options
        )
        return sharded  # type: ignore[return-value]  # the interface the client uses
    if isinstance(link, ClusterLink):
        return ClusterSubscriber(
            link, name=name, subscribe_timeout=subscribe_timeout, replier=replier, **options
        )
    return Subscriber(
        endpoint, name=name, subscribe_timeout=subscribe_timeout, replier=replier, **options
    )
