"""Publisher alone: client CPU per message for publish() and publish_many().

    python bench/publisher.py [--messages 300000] [--runs 3] [--shards N]

One process publishes 100-byte JSON dicts fire-and-forget to a fresh embedded Valkey (no
subscriber) and reports the best of ``--runs`` runs in messages/s, flush included. With
``--shards N`` the client is a sharded one over N fresh servers (``shards=``), publishing to
the same one topic: the cost of the sharded link on the publish path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import herald


async def measure(messages: int, runs: int, shards: int = 0) -> dict[str, float]:
    payload = {"sym": "ACME", "px": 1.2345, "n": 1, "pad": "x" * 52}
    best: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(herald.EmbeddedServer(persist=False)) for _ in range(shards or 1)
        ]
        options = {"shards": [s.url for s in servers]} if shards else {"url": servers[0].url}
        async with herald.AsyncClient(**options) as hub:
            await hub.publish("bench", payload)
            for label in ("publish", "publish_many"):
                for _ in range(runs):
                    start = time.perf_counter()
                    if label == "publish":
                        for _ in range(messages):
                            await hub.publish("bench", payload)
                    else:
                        chunk = [payload] * 1000
                        for _ in range(messages // 1000):
                            await hub.publish_many("bench", chunk)
                    await hub.flush()
                    rate = messages / (time.perf_counter() - start)
                    best[label] = max(best.get(label, 0.0), rate)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shards", type=int, default=0, help="a sharded client over N servers")
    args = parser.parse_args()
    for label, rate in asyncio.run(measure(args.messages, args.runs, args.shards)).items():
        print(f"{label:14} {rate / 1000:8.1f}k msg/s")


if __name__ == "__main__":
    main()
