"""Content-based routing: each incoming price goes to ``prices.{sector}``, chosen from its content.

    python examples/routing/main.py                      # embedded Valkey
    python examples/routing/main.py --url redis://localhost:6379 --ticks 5000

A router service subscribes to the raw feed ``prices.in`` and republishes every message on
the topic its rule names: ``prices.{sector}`` filled in from the message's own fields
(``prices.tech``, ``prices.energy``, ...). A message the rule cannot place (no ``sector``)
goes to ``prices.unrouted`` instead of being lost. Consumers subscribe to what they care about:
one sector, or the pattern ``prices.*`` for all of them (the feed itself is ``prices.in``, so
the pattern counts it too: the summary subtracts it). The last line printed is a JSON summary.

Herald has no routing API of its own; :class:`Route` below is the whole of it: a subscription
whose handler publishes. Rules that only look at the topic need none (subscribe to a pattern).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import string
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import herald

SECTORS = ("tech", "energy", "health", "finance")


class Route:
    """Republish every message of ``source`` (a topic or pattern) on ``target``, a template
    filled in from the message's data, e.g. ``"prices.{sector}"``.

    ``when`` filters (a message it rejects is dropped); a message the template cannot be filled
    from goes to ``fallback``. Counts of what it did are in ``routed`` (by target topic),
    ``unrouted`` and ``dropped``.

    Example::

        route = Route("prices.in", "prices.{sector}", fallback="prices.unrouted")
        await route.start(hub)
    """

    def __init__(
        self,
        source: str,
        target: str,
        *,
        when: Callable[[Any], bool] | None = None,
        fallback: str | None = None,
    ) -> None:
        self.source, self.target, self.when, self.fallback = source, target, when, fallback
        self.routed: Counter[str] = Counter()
        self.unrouted = self.dropped = 0
        self._sub: herald.Subscription | None = None

    def topic_for(self, data: Any) -> str | None:
        """The topic ``data`` goes to, or None when the template cannot be filled in."""
        if not isinstance(data, Mapping):
            return None
        try:
            return self.target.format_map(data)
        except (KeyError, ValueError, IndexError):
            return None

    async def start(self, hub: herald.AsyncClient) -> None:
        async def forward(msg: herald.Message) -> None:
            if self.when is not None and not self.when(msg.data):
                self.dropped += 1
                return
            topic = self.topic_for(msg.data)
            if topic is None:
                self.unrouted += 1
                if self.fallback is None:
                    return
                topic = self.fallback
            else:
                self.routed[topic] += 1
            await hub.publish(topic, msg.data, headers=msg.headers or None)

        self._sub = await hub.subscribe(self.source, handler=forward)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.close()


def feed(ticks: int, seed: int = 7) -> list[dict[str, Any]]:
    """A reproducible feed of prices; every 50th tick has no sector (it cannot be routed)."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(ticks):
        tick: dict[str, Any] = {
            "symbol": "".join(rnd.choices(string.ascii_uppercase, k=3)),
            "px": round(rnd.uniform(10, 500), 2),
            "seq": i,
        }
        if i % 50 != 49:
            tick["sector"] = rnd.choice(SECTORS)
        out.append(tick)
    return out


async def run(url: str, ticks: int) -> dict[str, Any]:
    prices = feed(ticks)
    received: Counter[str] = Counter()
    every_topic: Counter[str] = Counter()
    expected_total = len(prices) * 2  # the pattern sees the feed and the routed copy

    async with (
        herald.AsyncClient(url) as consumers,
        herald.AsyncClient(url) as router_hub,
        herald.AsyncClient(url) as source,
    ):
        done = asyncio.Event()

        def count_tech(msg: herald.Message) -> None:
            received["tech-desk"] += 1

        def count_all(msg: herald.Message) -> None:
            every_topic[msg.topic] += 1
            if sum(every_topic.values()) >= expected_total:
                done.set()

        await consumers.subscribe("prices.tech", handler=count_tech)
        await consumers.subscribe("prices.*", handler=count_all)
        route = Route("prices.in", "prices.{sector}", fallback="prices.unrouted")
        await route.start(router_hub)

        for tick in prices:
            await source.publish("prices.in", tick)
        await source.flush()
        try:
            await asyncio.wait_for(done.wait(), 30)
        except TimeoutError:
            pass
        await route.stop()

    want = Counter(f"prices.{t['sector']}" for t in prices if "sector" in t)
    return {
        "published": len(prices),
        "routed": dict(sorted(route.routed.items())),
        "unrouted": route.unrouted,
        "received_by_topic": {t: n for t, n in sorted(every_topic.items()) if t != "prices.in"},
        "tech_desk": received["tech-desk"],
        "correct": dict(route.routed) == dict(want)
        and every_topic["prices.unrouted"] == route.unrouted
        and received["tech-desk"] == want["prices.tech"]
        and all(every_topic[t] == n for t, n in want.items()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="Redis/Valkey URL (default: an embedded Valkey)")
    parser.add_argument("--ticks", type=int, default=2000)
    args = parser.parse_args()
    if args.url is None:
        with herald.EmbeddedServer(persist=False) as server:
            summary = asyncio.run(run(server.url, args.ticks))
    else:
        summary = asyncio.run(run(args.url, args.ticks))
    print(json.dumps(summary))
    raise SystemExit(0 if summary["correct"] else 1)


if __name__ == "__main__":
    main()
