"""Content-based routing: each incoming price goes to ``prices.{sector}``, chosen from its content.

    python examples/routing/main.py                      # embedded Valkey
    python examples/routing/main.py --url redis://localhost:6379 --ticks 5000

A :class:`herald.Router` reads the raw feed ``prices.in`` and republishes every price on the
topic its rule fills in from the price itself (``prices.tech``, ``prices.energy``, ...); a
price the rule cannot place (no ``sector``) goes to the default route, ``prices.unrouted``.
Half of the feed comes from a plain Redis publisher (JSON without Herald's envelope, as
redis-py's ``r.publish("prices.in", json.dumps(tick))`` sends it): routed by content all the
same. Consumers subscribe to one sector, or to the pattern ``prices.*`` (which sees the feed
itself too: the summary leaves it out). The last line printed is a JSON summary.

With ``Router(hub, "prices.in", group="router")`` on a durable ``prices.in`` the router would
be a consumer group member instead: nothing lost across its restarts (docs/routing.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import string
from collections import Counter
from typing import Any

import herald

SECTORS = ("tech", "energy", "health", "finance")


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
    want = Counter(f"prices.{t['sector']}" for t in prices if "sector" in t)
    want["prices.unrouted"] = sum("sector" not in t for t in prices)
    received: Counter[str] = Counter()
    tech_desk = 0
    done = asyncio.Event()

    def on_tech(msg: herald.Message) -> None:
        nonlocal tech_desk
        tech_desk += 1

    def count(msg: herald.Message) -> None:
        if msg.topic != "prices.in":
            received[msg.topic] += 1
            if received.total() == len(prices):
                done.set()

    async with (
        herald.AsyncClient(url) as consumers,
        herald.AsyncClient(url) as router_hub,
        herald.AsyncClient(url) as source,
        herald.AsyncClient(url, envelope=False) as plain,  # what a plain Redis client sends
    ):
        await consumers.subscribe("prices.tech", handler=on_tech)
        await consumers.subscribe("prices.*", handler=count)
        router = herald.Router(router_hub, "prices.in")
        router.route(to="prices.{sector}", name="by sector")
        router.default("prices.unrouted")
        async with router:
            for i, tick in enumerate(prices):
                await (plain if i % 2 else source).publish("prices.in", tick)
            await asyncio.wait_for(done.wait(), 30)

    return {
        "published": len(prices),
        "counters": router.counters,
        "received_by_topic": dict(sorted(received.items())),
        "tech_desk": tech_desk,
        "correct": received == want
        and tech_desk == want["prices.tech"]
        and router.counters["default"] == want["prices.unrouted"],
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
