"""Module notifications and cache invalidation that stay correct across a reconnect.

    python examples/cache_invalidation/main.py           # embedded Valkey
    python examples/cache_invalidation/main.py --url redis://localhost:6379 --rounds 5

A *catalog* service owns product prices (a Redis hash per product, the source of truth). Each
time it changes one it publishes ``{"key": "product:7"}`` on one topic, ``cache.invalidate``,
declared recoverable (``history=1000``): every message gets an offset and is kept in a bounded
history. Two other services (*shop* and *search*) keep a local read-through cache of prices and
drop an entry when its invalidation arrives.

Then the subscriber connections of both services are cut (``CLIENT KILL``, as a network
blip or a failover would) while the catalog goes on changing prices. Herald reconnects,
resubscribes, and reads the invalidations it missed from the history (after the last offset it
delivered): each arrives once, in order, and no cache serves a stale price. The JSON summary
counts stale reads (0), the messages recovered from history, and gaps (none).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from typing import Any

import herald

TOPIC = "cache.invalidate"
PRODUCTS = 50


class CachedPrices:
    """A service's read-through cache of prices, invalidated by messages on :data:`TOPIC`."""

    def __init__(self, name: str, hub: herald.AsyncClient) -> None:
        self.name, self.hub = name, hub
        self.cache: dict[str, str] = {}
        self.invalidations = 0
        self.changed = asyncio.Event()
        self.sub: herald.Subscription | None = None

    async def start(self) -> None:
        self.sub = await self.hub.subscribe(TOPIC, handler=self.invalidate)

    def invalidate(self, msg: herald.Message) -> None:
        self.cache.pop(msg.data["key"], None)
        self.invalidations += 1
        self.changed.set()

    async def seen(self, count: int) -> None:
        """Return once ``count`` invalidations have arrived."""
        while self.invalidations < count:
            self.changed.clear()
            await self.changed.wait()

    async def price(self, key: str) -> str:
        if key not in self.cache:
            self.cache[key] = bytes(await self.hub.execute("HGET", key, "price")).decode()
        return self.cache[key]


async def update(catalog: herald.AsyncClient, key: str, rnd: random.Random) -> None:
    """Change a price (the source of truth first), then tell everyone."""
    await catalog.execute("HSET", key, "price", f"{rnd.uniform(1, 100):.2f}")
    await catalog.publish(TOPIC, {"key": key})


async def cut_subscribers(admin: herald.AsyncClient, tag: str) -> int:
    """Close the server side of this run's subscriber connections (``CLIENT KILL ID``)."""
    listing = bytes(await admin.execute("CLIENT", "LIST", "TYPE", "pubsub")).decode()
    cut = 0
    for line in listing.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if tag in fields.get("name", ""):
            cut += int(await admin.execute("CLIENT", "KILL", "ID", fields["id"]))
    return cut


async def run(url: str, rounds: int, seed: int = 1) -> dict[str, Any]:
    rnd = random.Random(seed)
    tag = f"{random.getrandbits(32):08x}"  # names this run's connections, to cut only those
    keys = [f"product:{i}" for i in range(PRODUCTS)]
    async with (
        herald.AsyncClient(url) as catalog,
        herald.AsyncClient(url, name=f"shop-{tag}") as shop_hub,
        herald.AsyncClient(url, name=f"search-{tag}") as search_hub,
    ):
        # Recoverable: the last 1000 invalidations are kept (an hour at most) for reconnects.
        await catalog.declare(TOPIC, history=1000, history_ttl=3600)
        for key in keys:
            await catalog.execute("HSET", key, "price", "1.00")
        services = [CachedPrices("shop", shop_hub), CachedPrices("search", search_hub)]
        for s in services:
            await s.start()
        published = stale = cuts = 0

        async def check() -> int:
            """Stale reads: a cached price that differs from the source of truth."""
            bad = 0
            for s in services:
                for key in keys:
                    truth = bytes(await catalog.execute("HGET", key, "price")).decode()
                    bad += await s.price(key) != truth
            return bad

        async def settle() -> None:
            """Wait until every service has seen every invalidation published so far."""
            async with asyncio.timeout(30):
                await asyncio.gather(*(s.seen(published) for s in services))

        for _ in range(rounds):
            await check()  # warm every cache
            # Cut every subscriber's connection, and change prices while they are away.
            cuts += await cut_subscribers(catalog, tag)
            for key in rnd.sample(keys, 10):
                await update(catalog, key, rnd)
                published += 1
            await settle()
            stale += await check()
        stats = [s.sub.stats for s in services if s.sub is not None]
        for s in services:
            if s.sub is not None:
                await s.sub.close()
        await catalog.delete_topic(TOPIC)
    return {
        "rounds": rounds,
        "invalidations_published": published,
        "received": {s.name: s.invalidations for s in services},
        "recovered_from_history": sum(st.recovered for st in stats),
        "duplicates_dropped": sum(st.duplicates for st in stats),
        "gaps": sum(st.gaps for st in stats),
        "history_lost": sum(st.history_lost for st in stats),
        "connections_cut": cuts,
        "stale_reads": stale,
        "correct": stale == 0 and all(s.invalidations == published for s in services),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="Redis/Valkey URL (default: an embedded Valkey)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.url is None:
        with herald.EmbeddedServer(persist=False) as server:
            summary = asyncio.run(run(server.url, args.rounds))
    else:
        summary = asyncio.run(run(args.url, args.rounds))
    print(json.dumps(summary))
    raise SystemExit(0 if summary["correct"] else 1)


if __name__ == "__main__":
    main()
