"""Which channels have subscribers now, on one server or on every primary of a cluster.

The server knows a channel only while someone subscribes to it: ``PUBSUB CHANNELS`` lists
those, ``PUBSUB NUMSUB`` counts their subscriber connections. Each node answers for the clients
connected to it, so on a cluster every primary is asked and the counts are summed (sharded
channels, ``SHARDCHANNELS``/``SHARDNUMSUB``, are each known to their slot's primary only).
Nothing here counts messages: the server keeps no per-channel message counter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from herald._errors import ServerError
from herald._io.cluster import ClusterLink
from herald._io.interface import Connection
from herald._io.link import Link

#: Herald's own channels (request inboxes, the gateway's probe), not users' topics.
INTERNAL_PREFIX = "_herald."
_NAMES_PER_CALL = 500  # NUMSUB arguments per command: a long list is split


@dataclass(frozen=True)
class PubSubState:
    """What the server(s) know about Pub/Sub now.

    Attributes:
        channels: channel -> ``SUBSCRIBE`` connections (summed over the nodes asked).
        shard_channels: channel -> ``SSUBSCRIBE`` connections (Redis 7+; empty before).
        patterns: ``PSUBSCRIBE`` patterns (summed over the nodes asked).
        nodes: the addresses asked (one, or every primary of a cluster).
        cluster: whether the nodes are a cluster's primaries.
    """

    channels: dict[str, int] = field(default_factory=dict)
    shard_channels: dict[str, int] = field(default_factory=dict)
    patterns: int = 0
    nodes: tuple[str, ...] = ()
    cluster: bool = False

    def subscribers(self) -> dict[str, int]:
        """Subscriber connections per channel, counted once per subscriber.

        One server: ``SUBSCRIBE`` plus ``SSUBSCRIBE`` connections (a client of another library
        may subscribe either way). A cluster: a Herald subscriber holds an ``SSUBSCRIBE`` on the
        topic's shard *and* a ``SUBSCRIBE`` on some node (for messages published with
        ``PUBLISH``), so a channel with sharded subscribers counts those only, and one without
        counts its ``SUBSCRIBE`` connections (plain clients, unsharded topics).
        """
        if not self.cluster:
            out = dict(self.channels)
            for name, n in self.shard_channels.items():
                out[name] = out.get(name, 0) + n
            return out
        out = dict(self.channels)
        out.update(self.shard_channels)
        return out


def cluster_nodes(link: Connection) -> list[tuple[str, int]]:
    """A cluster's primaries (host, port); empty for one server."""
    if isinstance(link, ClusterLink):
        return [(node.host, node.port) for node in link.links]
    return []


def nodes_of(link: Connection) -> dict[str, Link]:
    """The connections to ask: every primary of a cluster, else the one server."""
    if isinstance(link, ClusterLink):
        return {node.address: lk for node, lk in link.links.items()}
    assert isinstance(link, Link)
    return {link.address: link}


async def on_every_node(link: Connection, *args: str) -> dict[str, Any]:
    """``args`` run on each node of :func:`nodes_of`: address -> reply."""
    nodes = nodes_of(link)
    replies = await asyncio.gather(*(lk.execute(*args) for lk in nodes.values()))
    return dict(zip(nodes, replies, strict=True))


async def pubsub_state(link: Connection, pattern: str = "*") -> PubSubState:
    """Channels (and sharded channels) matching ``pattern`` that have subscribers now, with
    their subscriber connections, and the pattern subscriptions, from every node."""
    nodes = nodes_of(link)
    results = await asyncio.gather(*(_node_state(lk, pattern) for lk in nodes.values()))
    channels: dict[str, int] = {}
    shard: dict[str, int] = {}
    patterns = 0
    for node_channels, node_shard, node_patterns in results:
        for name, n in node_channels.items():
            channels[name] = channels.get(name, 0) + n
        for name, n in node_shard.items():
            shard[name] = shard.get(name, 0) + n
        patterns += node_patterns
    return PubSubState(
        channels=channels,
        shard_channels=shard,
        patterns=patterns,
        nodes=tuple(nodes),
        cluster=isinstance(link, ClusterLink),
    )


async def _node_state(link: Link, pattern: str) -> tuple[dict[str, int], dict[str, int], int]:
    names = await link.execute("PUBSUB", "CHANNELS", pattern)
    channels = await _counts(link.execute, "NUMSUB", names)
    try:
        shard_names = await link.execute("PUBSUB", "SHARDCHANNELS", pattern)
    except ServerError:  # before Redis 7: no sharded Pub/Sub
        shard_names = []
    shard = await _counts(link.execute, "SHARDNUMSUB", shard_names)
    patterns = int(await link.execute("PUBSUB", "NUMPAT"))
    return channels, shard, patterns


async def _counts(
    execute: Callable[..., Awaitable[Any]], kind: str, names: list[bytes]
) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(0, len(names), _NAMES_PER_CALL):
        reply = await execute("PUBSUB", kind, *names[i : i + _NAMES_PER_CALL])
        for j in range(0, len(reply) - 1, 2):
            name = reply[j].decode(errors="replace")
            # A subscriber may leave between CHANNELS and NUMSUB: a channel at 0 is gone.
            if int(reply[j + 1]):
                out[name] = int(reply[j + 1])
    return out
