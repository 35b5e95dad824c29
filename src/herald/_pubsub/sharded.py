"""Subscribing on a sharded client: each topic on its shard's connection, patterns on all.

A sharded client (:mod:`herald._io.sharded`) has one Pub/Sub connection per shard, each a plain
:class:`~herald._pubsub.subscriber.Subscriber` opened at the first subscription that needs it. A
topic's messages are published on its shard only, so an exact name is subscribed there; a
pattern can match topics of every shard, so it is subscribed on every shard's connection (and
each message still arrives once: it is published on one shard). Each connection reconnects,
resubscribes and reports its gaps by itself: an outage of one shard is a gap for the names on
that shard only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from herald._core.topics import is_pattern
from herald._io.group import Links
from herald._io.link import Link
from herald._io.sharded import ShardedLink
from herald._pubsub.subscriber import Subscriber
from herald._pubsub.subscription import Subscription


class ShardedSubscriber:
    """A client's subscriptions over its shards (see the module docstring)."""

    # Alike ClusterSubscriber's and Subscriber's on purpose: new_subscriber makes them the same way.
    def __init__(
        self,
        router: ShardedLink,
        *,
        name: str,
        subscribe_timeout: float = 10.0,
        replier: Any = None,
        resolvers: dict[str, Any] | None = None,
        **link_options: Any,
    ) -> None:
        link_options.pop("resolver", None)
        resolvers = resolvers or {}
        self.router = router
        self.replier = replier
        self.subscribe_timeout = subscribe_timeout
        self.shards = [
            Subscriber(
                ep,
                name=f"{name}-{i}",
                subscribe_timeout=subscribe_timeout,
                replier=replier,
                resolver=resolvers.get(n),
                **link_options,
            )
            for i, (n, ep) in enumerate(router.endpoint.shards)
        ]
        self._index = {id(link): i for i, link in enumerate(router.links)}

    @property
    def link(self) -> Links:
        """The connections as one, for the client's counters."""
        return Links([s.link for s in self.shards])

    @property
    def gaps(self) -> int:
        return sum(s.gaps for s in self.shards)

    def _shard(self, name: str) -> Subscriber:
        return self.shards[self._index[id(self.router.link_for_key(name))]]

    def link_for(self, name: str) -> Link:
        return self._shard(name).link

    def _split(
        self, sub: Subscription, names: tuple[str, ...] | None = None
    ) -> dict[Subscriber, tuple[str, ...]]:
        parts: dict[Subscriber, list[str]] = {}
        for name in sub.names if names is None else names:
            targets = self.shards if is_pattern(name) else [self._shard(name)]
            for shard in targets:
                parts.setdefault(shard, []).append(name)
        return {shard: tuple(names) for shard, names in parts.items()}

    async def add(self, sub: Subscription, names: tuple[str, ...] | None = None) -> None:
        """Subscribe ``sub``'s names (or ``names``, added later), each on its shard."""
        parts = self._split(sub, names)
        results = await asyncio.gather(
            *(shard.add(sub, names) for shard, names in parts.items()), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await self.remove(sub, names)
            raise failed[0]

    async def remove(self, sub: Subscription, names: tuple[str, ...] | None = None) -> None:
        """Unsubscribe ``sub``, or only its ``names``."""
        if names is None:
            await asyncio.gather(*(shard.remove(sub) for shard in self.shards))
            return
        parts = self._split(sub, names)
        await asyncio.gather(*(shard.remove(sub, part) for shard, part in parts.items()))

    def discard(self, sub: Subscription) -> None:
        for shard in self.shards:
            shard.discard(sub)

    async def close(self) -> None:
        for shard in self.shards:
            await shard.close()
